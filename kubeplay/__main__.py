"""python -m kubeplay [options] FILE... : run rendered manifests on Docker until Ctrl-C.

Example (the rest is in k8s/README.md#running-the-pods-without-a-cluster):

    kubectl kustomize k8s/overlays/dev > /tmp/dev.yaml
    k8s/secrets.sh --dry-run DIR > /tmp/secrets.yaml
    python -m kubeplay --image redis:8=wharf-local/redis:8 --job-from-cronjob backup-full \\
        --proxy-image wharf-local/nginx:stable --publish nginx:80=8088 /tmp/dev.yaml /tmp/secrets.yaml
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .manifests import NOT_EMULATED, ManifestError, Manifests
from .runtime import Cluster, NotReady, Publish


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kubeplay", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="manifest files (kubectl kustomize output, Secrets)")
    parser.add_argument("--project", default="kubeplay", help="prefix of every container and network")
    parser.add_argument("--state-dir", type=Path, help="volumes on the host (default .wharf/kubeplay/PROJECT)")
    parser.add_argument("--image", action="append", default=[], metavar="FROM=TO", help="run TO where a pod says FROM")
    parser.add_argument(
        "--publish", action="append", default=[], metavar="SERVICE:PORT=HOSTPORT", help="a Service port on 127.0.0.1"
    )
    parser.add_argument(
        "--job-from-cronjob", action="append", default=[], metavar="NAME", help="run CronJob NAME's job once"
    )
    parser.add_argument("--proxy-image", default="nginx:1.30", help="an nginx with the stream module, for Services")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for every workload to be ready")
    parser.add_argument("--check", action="store_true", help="stop (and remove the volumes) once ready; exit 0 or 1")
    return parser.parse_args(argv)


def publish(text: str) -> Publish:
    service, _, ports = text.partition(":")
    port, _, host = ports.partition("=")
    return Publish(service, int(port), int(host))


def main(argv: list[str]) -> int:
    args = parse(argv)
    try:
        manifests = Manifests.load(path.read_text() for path in args.files)
        for name in args.job_from_cronjob:
            manifests.add(manifests.job_from_cronjob(name))
        cluster = Cluster(
            manifests,
            project=args.project,
            state_dir=args.state_dir or Path(".wharf/kubeplay") / args.project,
            images=dict(item.split("=", 1) for item in args.image),
            publish=[publish(p) for p in args.publish],
            proxy_image=args.proxy_image,
        )
    except ManifestError as error:
        print(f"kubeplay: {error}", file=sys.stderr)
        return 1
    for kind, names in manifests.ignored.items():
        print(f"kubeplay: not emulated: {kind} {', '.join(names)} ({NOT_EMULATED[kind]})", file=sys.stderr)
    if unscheduled := sorted(set(manifests.cronjobs) - set(args.job_from_cronjob)):
        names = ", ".join(unscheduled)
        print(f"kubeplay: not scheduled: CronJob {names} (--job-from-cronjob runs one)", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cluster.start()
    try:
        seconds = cluster.wait_ready(args.timeout, progress=lambda text: print(f"waiting: {text}", file=sys.stderr))
        print(f"kubeplay: every workload ready in {seconds:.0f} s", file=sys.stderr)
        if not args.check:
            stop.wait()
    except NotReady as error:
        print(f"kubeplay: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        cluster.down(volumes=args.check)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
