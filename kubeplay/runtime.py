"""Pods as Docker containers, with what a kubelet and a Service do around them.

Each pod runs in a thread of its own: it writes its volumes, runs its init containers in order
(retrying a failed one with back-off), starts its container, restarts it when it exits or fails
its liveness or startup probe (back-off 10 s, doubling, at most 5 min, as the kubelet does), and
follows its readiness probe. Services are proxies that send to the ready pods only (services.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound
from docker.types import EndpointConfig, Mount

from .manifests import ManifestError, Manifests, Obj, object_name
from .services import ServiceProxy
from .translate import Container, Pod, Probe, VolumeMount, pods_of

LABEL = "kubeplay.project"
# The kubelet does not verify the certificate of an HTTPS probe.
UNVERIFIED = ssl.create_default_context()
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE
MAX_BACKOFF = 300.0


class NotReady(Exception):
    """The workloads did not all become ready (or complete) in time; the message says why, per object."""


@dataclass
class PodState:
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed
    ready: bool = False  # reported ready: only once the Services that select the pod send to it
    endpoint: bool = False  # the Services send to it
    restarts: int = 0
    problem: str = "not started yet"
    last_exit: str = ""  # why the container last ended (kubectl's "Last State"), kept across a restart
    gave_up: bool = False  # a Job past its backoffLimit, or kubeplay itself failed: it stays so


@dataclass
class Publish:
    """A Service port reached from the host, as `kubectl port-forward svc/NAME HOST:PORT` would."""

    service: str
    port: int
    host_port: int


class PodRunner(threading.Thread):
    def __init__(self, cluster: Cluster, pod: Pod, *, after: PodRunner | None = None) -> None:
        super().__init__(name=f"pod-{pod.name}", daemon=True)
        self.cluster, self.pod, self.after = cluster, pod, after
        self.state = PodState()
        self.docker = docker.from_env()
        self.dir = cluster.state_dir / "pods" / pod.name
        self.current: Any = None  # the running docker container
        self.ip = ""

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while self.after and not self.after.state.ready:  # a StatefulSet starts its pods in order
                self.state.problem = f"waiting for {self.after.pod.name} to be ready (OrderedReady)"
                if self.cluster.stopping.wait(0.5):
                    return
            self.write_volumes()
            failures = 0
            while not self.cluster.stopping.is_set():
                self.run_pod()
                if self.state.phase != "Failed" or self.pod.backoff_limit is None:
                    return
                failures += 1  # a Job replaces a failed pod until it has failed backoffLimit times
                if failures > self.pod.backoff_limit:
                    self.state.problem += f" (backoffLimit {self.pod.backoff_limit} reached)"
                    self.state.gave_up = True
                    return
                self.state.phase = "Pending"
                self.back_off()
        except Exception as error:  # a bug or a Docker failure: say so in the report, never hang
            self.state.phase, self.state.problem = "Failed", f"kubeplay error: {error}"
            self.state.gave_up = True

    def run_pod(self) -> None:
        """Init containers in order, then the container until it ends for good (or kubeplay stops)."""
        for spec in self.pod.init_containers:
            if not self.run_init(spec):
                return
        self.state.phase = "Running"
        while not self.cluster.stopping.is_set():
            code = self.serve(self.pod.container)
            if code is None:
                return
            if code == 0 and self.pod.restart_policy != "Always":
                self.state.phase, self.state.problem = "Succeeded", ""
                return
            if self.pod.restart_policy == "Never":
                self.state.phase = "Failed"
                return
            self.back_off()

    def run_init(self, spec: Container) -> bool:
        """Run one init container until it succeeds (True) or, for a pod that never restarts, fails."""
        while not self.cluster.stopping.is_set():
            self.state.problem = f"init container {spec.name} running"
            container = self.create(spec)
            container.start()
            code = self.wait_exit(container)
            if code is None:
                return False
            if code == 0:
                self.remove(container)
                return True
            self.state.problem = f"init container {spec.name} exited {code}: {self.tail(container)}"
            self.remove(container)
            if self.pod.restart_policy == "Never":
                self.state.phase = "Failed"
                return False
            self.back_off()
        return False

    def serve(self, spec: Container) -> int | None:
        """Run the pod's container with its probes until it exits or is killed: its exit code."""
        self.current = container = self.create(spec)
        container.start()
        container.reload()
        self.ip = container.attrs["NetworkSettings"]["Networks"][self.cluster.network]["IPAddress"]
        self.state.problem = f"container {spec.name} started, probes not passed yet"
        started = time.monotonic()
        probes = {p.kind: ProbeRun(p, started) for p in spec.probes}
        startup_done = "startupProbe" not in probes
        if "readinessProbe" not in probes:
            self.set_ready(True)
        while not self.cluster.stopping.wait(0.5):
            container.reload()
            if container.status == "exited":
                return self.exited(container, spec)
            for probe in probes.values():
                if probe.probe.kind != "startupProbe" and not startup_done:
                    continue
                if not probe.due():
                    continue
                outcome = probe.record(run_probe(probe.probe, container.id, self.ip))
                if probe.failures and not outcome:
                    self.state.problem = f"{probe.last} ({probe.failures} of {probe.probe.failure_threshold} failures)"
                if probe.probe.kind == "startupProbe" and outcome == "passed":
                    startup_done = True
                elif probe.probe.kind == "readinessProbe" and outcome in ("passed", "failed"):
                    self.set_ready(outcome == "passed")
                    self.state.problem = "" if outcome == "passed" else f"not ready: {probe.last}"
                elif outcome == "failed":  # startup or liveness: the kubelet kills the container
                    self.set_ready(False)
                    self.stop(container, spec)
                    self.exited(container, spec, killed=f"{probe.last} (failed {probe.failures} times): killed")
                    return 137  # a failure whatever the process answered to SIGTERM
        return None

    def exited(self, container: Any, spec: Container, *, killed: str = "") -> int:
        """Record why ``container`` ended (``killed``: the kubelet stopped it), remove it, give its exit code."""
        self.set_ready(False)
        code = int(container.attrs["State"]["ExitCode"])
        if killed:
            self.state.problem = self.state.last_exit = killed
        elif code != 0 or self.pod.restart_policy == "Always":
            self.state.problem = self.state.last_exit = f"container {spec.name} exited {code}: {self.tail(container)}"
        self.remove(container)
        return code

    def back_off(self) -> None:
        self.state.restarts += 1
        delay = min(self.cluster.backoff * 2 ** (self.state.restarts - 1), MAX_BACKOFF)
        self.cluster.stopping.wait(delay)

    def wait_exit(self, container: Any) -> int | None:
        while not self.cluster.stopping.wait(0.5):
            container.reload()
            if container.status == "exited":
                return int(container.attrs["State"]["ExitCode"])
        return None

    # --- docker ------------------------------------------------------------------------------

    def create(self, spec: Container) -> Any:
        """A container of ``spec`` on the namespace network, under the pod's name."""
        name = f"{self.cluster.project}-{self.pod.name}-{spec.name}"
        self.remove_by_name(name)
        aliases = [self.pod.name] + ([f"{self.pod.name}.{self.pod.subdomain}"] if self.pod.subdomain else [])
        return self.docker.containers.create(
            spec.image,
            name=name,
            hostname=self.pod.name[:63],
            entrypoint=spec.entrypoint,
            command=spec.args,
            environment=spec.env,
            user=spec.user,
            group_add=spec.group_add or None,
            read_only=spec.read_only,
            cap_add=spec.cap_add or None,
            cap_drop=spec.cap_drop or None,
            security_opt=spec.security_opt or None,
            privileged=spec.privileged,
            mem_limit=spec.mem_limit,
            memswap_limit=spec.mem_limit,
            nano_cpus=spec.nano_cpus,
            mounts=[self.mount(m) for m in spec.mounts],
            working_dir=spec.working_dir,
            labels={
                LABEL: self.cluster.project,
                "kubeplay.owner": self.pod.owner,
                "kubeplay.grace": str(int(self.pod.grace_seconds)),
            },
            network=self.cluster.network,
            networking_config={self.cluster.network: EndpointConfig(version="1.41", aliases=aliases)},
        )

    def mount(self, mount: VolumeMount) -> Mount:
        volume = self.pod.volumes[mount.volume]
        if volume.kind == "memory":
            return Mount(mount.path, None, type="tmpfs", tmpfs_size=volume.size, tmpfs_mode=0o1777)
        source = self.volume_dir(volume.name) / mount.sub_path if mount.sub_path else self.volume_dir(volume.name)
        if not source.exists():  # the kubelet creates a missing subPath as a directory
            source.mkdir(parents=True, mode=0o777)
        return Mount(mount.path, str(source), type="bind", read_only=mount.read_only)

    def stop(self, container: Any, spec: Container) -> None:
        """The kubelet's stop: the preStop hook, then SIGTERM, then SIGKILL at the grace period's end."""
        deadline = time.monotonic() + self.pod.grace_seconds
        if spec.pre_stop:
            with contextlib.suppress(APIError):  # already gone
                container.exec_run(spec.pre_stop)
        with contextlib.suppress(APIError):  # already gone
            container.stop(timeout=max(1, int(deadline - time.monotonic())))
            container.reload()

    def remove(self, container: Any) -> None:
        with contextlib.suppress(APIError):  # already gone
            container.remove(force=True)

    def remove_by_name(self, name: str) -> None:
        with contextlib.suppress(APIError):  # already gone
            self.docker.containers.get(name).remove(force=True)

    def tail(self, container: Any, lines: int = 3) -> str:
        with contextlib.suppress(APIError):  # already gone
            text = container.logs(tail=lines).decode(errors="replace").strip()
            return " | ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no output)"
        return "(no logs)"

    def set_ready(self, ready: bool) -> None:
        """Become (or stop being) an endpoint of the Services that select this pod. Ready is
        reported only once those Services send to it, so "ready" means a client gets through."""
        if ready == self.state.ready:
            return
        if not ready:
            self.state.ready = False
        self.state.endpoint = ready
        self.cluster.update_endpoints()
        self.state.ready = ready

    # --- volumes on the host -------------------------------------------------------------------

    def volume_dir(self, name: str) -> Path:
        volume = self.pod.volumes[name]
        if volume.kind == "claim":  # outlives the pod, like a PersistentVolume
            return self.cluster.state_dir / "claims" / volume.claim
        return self.dir / name

    def write_volumes(self) -> None:
        """Each volume as the kubelet prepares it, with fsGroup's ownership."""
        group = self.pod.fs_group
        for volume in self.pod.volumes.values():
            target = self.volume_dir(volume.name)
            if volume.kind == "memory":
                continue
            if volume.kind == "claim":
                # A new volume: the kubelet hands its root to fsGroup (g+rwx, setgid). Pods of one
                # claim start in parallel: the one whose mkdir succeeds prepares it.
                with contextlib.suppress(FileExistsError):
                    target.mkdir(parents=True)
                    _owned(target, 0o2775 if group is not None else 0o755, group)
                continue
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            if volume.kind == "emptyDir":
                _owned(target, 0o2777 if group is not None else 0o777, group)
                continue
            _owned(target, 0o755, group)
            for relative, (content, mode) in volume.files.items():
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                _owned(path, mode, group)


def run_probe(probe: Probe, container_id: str, address: str) -> str:
    """Run ``probe`` once as the kubelet does, against a container at ``address``: '' or what failed."""
    if probe.action == "exec":
        try:
            result = subprocess.run(
                ["docker", "exec", container_id, *probe.command],
                capture_output=True,
                text=True,
                timeout=probe.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"timed out after {probe.timeout} s"
        output = (result.stdout + result.stderr).strip()[-200:]
        return "" if result.returncode == 0 else f"exit {result.returncode}: {output}"
    try:
        if probe.action == "tcpSocket":
            socket.create_connection((address, probe.port), timeout=probe.timeout).close()
            return ""
        url = f"{probe.scheme.lower()}://{address}:{probe.port}{probe.path}"
        request = urllib.request.Request(url, headers=dict(probe.headers))  # noqa: S310 (HTTP or HTTPS)
        with urllib.request.urlopen(request, timeout=probe.timeout, context=UNVERIFIED) as response:  # noqa: S310
            return "" if 200 <= response.status < 400 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (OSError, urllib.error.URLError) as error:
        return str(getattr(error, "reason", error))


@dataclass
class ProbeRun:
    """A probe's schedule and its run of consecutive outcomes."""

    probe: Probe
    started: float
    next_at: float = 0.0
    failures: int = 0
    successes: int = 0
    last: str = ""

    def __post_init__(self) -> None:
        self.next_at = self.started + self.probe.initial_delay

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def record(self, failure: str) -> str:
        """'passed' or 'failed' when the thresholds are crossed, else ''."""
        self.next_at = time.monotonic() + self.probe.period
        if failure:
            self.failures, self.successes = self.failures + 1, 0
            self.last = f"{self.probe.describe()}: {failure}"
            return "failed" if self.failures >= self.probe.failure_threshold else ""
        self.successes, self.failures = self.successes + 1, 0
        return "passed" if self.successes >= self.probe.success_threshold else ""


@dataclass
class Cluster:
    """The manifests' workloads, run as Docker containers under one project name."""

    manifests: Manifests
    project: str
    state_dir: Path
    images: dict[str, str] = field(default_factory=dict)  # image in the manifests -> image to run
    publish: list[Publish] = field(default_factory=list)
    proxy_image: str = "nginx:1.30"  # any nginx with the stream module, for the Services
    backoff: float = 10.0  # the kubelet's first restart delay
    stopping: threading.Event = field(default_factory=threading.Event)
    runners: list[PodRunner] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.docker = docker.from_env()
        self.state_dir = self.state_dir.resolve()  # Docker binds absolute paths only
        self.network = self.project
        self.proxies = [
            ServiceProxy(service, self.state_dir / "services" / service["metadata"]["name"])
            for service in self.manifests.services
        ]
        for publish in self.publish:
            proxy = self.proxy(publish.service)
            if publish.port not in {port["port"] for port in proxy.service["spec"]["ports"]}:
                raise ManifestError(f"Service/{publish.service} has no port {publish.port}")
            proxy.published[publish.port] = publish.host_port
        self.plan = self.plan_pods()  # every static error before anything starts

    def proxy(self, name: str) -> ServiceProxy:
        for proxy in self.proxies:
            if proxy.name == name:
                return proxy
        raise ManifestError(f"Service/{name} not found")

    def image_user(self, image: str) -> str:
        try:
            return self.docker.images.get(image).attrs["Config"].get("User", "")
        except ImageNotFound:
            raise ManifestError(f"image {image} is not on this machine (no registry here): build or map it") from None

    def plan_pods(self) -> list[tuple[Obj, list[Pod]]]:
        plans = []
        for workload in self.manifests.workloads:
            pods = pods_of(self.manifests, workload, images=self.images, image_user=self.image_user)
            for spec in [c for pod in pods for c in [*pod.init_containers, pod.container]]:
                self.image_user(spec.image)  # present, or a clear error now
            plans.append((workload, pods))
        self.image_user(self.proxy_image)
        return plans

    def start(self) -> Cluster:
        self.down(volumes=False)  # what a previous run left (its claims stay, as PersistentVolumes do)
        self.stopping.clear()
        labels = {LABEL: self.project}
        self.docker.networks.create(self.network, driver="bridge", labels=labels)
        for proxy in self.proxies:
            proxy.start(
                self.docker,
                image=self.proxy_image,
                network=self.network,
                aliases=self.service_names(proxy.name),
                labels=labels,
            )
        for workload, pods in self.plan:
            previous = None
            for pod in pods:
                runner = PodRunner(self, pod, after=previous if workload["kind"] == "StatefulSet" else None)
                self.runners.append(runner)
                previous = runner
        for runner in self.runners:
            runner.start()
        return self

    def service_names(self, name: str) -> list[str]:
        namespace = self.manifests.namespace
        return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]

    def update_endpoints(self) -> None:
        """Point every Service at its ready pods (called whenever a pod's readiness changes)."""
        for proxy in self.proxies:
            ready = [r for r in self.runners if r.state.endpoint and r.ip and proxy.selects(r.pod.labels)]
            proxy.update([(r.ip, r.pod.container.ports) for r in ready])

    # --- status ------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """One line per pod that is not ready (a Job's: not complete), with what holds it."""
        lines = []
        for workload, pods in self.plan:
            for runner in (r for r in self.runners if r.pod in pods):
                state = runner.state
                if state.phase == "Succeeded" if workload["kind"] == "Job" else state.ready:
                    continue
                restarts = f", {state.restarts} restarts" if state.restarts else ""
                # A restarted container that is not ready yet: why the previous one ended, too.
                last = f"; last exit: {state.last_exit}" if state.last_exit not in ("", state.problem) else ""
                lines.append(
                    f"{object_name(workload)} pod {runner.pod.name} ({state.phase}{restarts}): {state.problem}{last}"
                )
        return lines

    def gave_up(self) -> bool:
        return any(runner.state.gave_up for runner in self.runners)

    def wait_ready(self, timeout: float, *, progress: Callable[[str], None] | None = None) -> float:
        """Seconds until every workload is ready (Jobs complete); NotReady with the reasons on timeout."""
        started = time.monotonic()
        last = ""
        while (elapsed := time.monotonic() - started) < timeout:
            problems = self.problems()
            if not problems:
                return elapsed
            if self.gave_up():
                break
            if progress and (status := "\n  ".join(problems)) != last:
                progress(status)
                last = status
            time.sleep(0.5)
        raise NotReady(f"not ready after {time.monotonic() - started:.0f} s:\n  " + "\n  ".join(self.problems()))

    # --- teardown ----------------------------------------------------------------------------

    def down(self, *, volumes: bool = True) -> None:
        """Stop every container (SIGKILL after its pod's grace period), remove the networks and volumes."""
        self.stopping.set()
        self._remove_containers()
        for runner in self.runners:
            runner.join(timeout=10)
        self._remove_containers()  # any a runner created between the first pass and seeing `stopping`
        for network in self.docker.networks.list(filters={"label": f"{LABEL}={self.project}"}):
            with contextlib.suppress(APIError):  # already gone
                network.remove()
        shutil.rmtree(self.state_dir / "pods", ignore_errors=True)
        shutil.rmtree(self.state_dir / "services", ignore_errors=True)
        if volumes:
            shutil.rmtree(self.state_dir / "claims", ignore_errors=True)
        self.runners = []

    def _remove_containers(self) -> None:
        stoppers = []
        for container in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.project}"}):
            grace = int(container.labels.get("kubeplay.grace", "10"))
            stopper = threading.Thread(target=_stop_and_remove, args=(container, grace), daemon=True)
            stopper.start()
            stoppers.append(stopper)
        for stopper in stoppers:
            stopper.join()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.down()


def _stop_and_remove(container: Any, grace: int) -> None:
    with contextlib.suppress(APIError):  # already gone
        container.stop(timeout=grace)
    with contextlib.suppress(APIError):  # already gone
        container.remove(force=True)


def _owned(path: Path, mode: int, group: int | None) -> None:
    if group is not None:
        os.chown(path, 0, group)
    path.chmod(mode)
