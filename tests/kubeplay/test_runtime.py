"""What kubeplay does around pods, on a two-Deployment manifest of its own: a Service reaches ready
pods only (on its own port, sending to the target port), and a failed liveness probe restarts the
container."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import PROJECT, Cluster

pytestmark = pytest.mark.own_project(minutes=0.25)

SLOW = 10  # seconds: what a probe or a request may take here; what is checked is the answer, not its speed


def deployment(name: str, container: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                    "terminationGracePeriodSeconds": 1,  # PID 1 here ignores SIGTERM: killed after 1 s
                    "containers": [{"name": name, "image": "wharf/auth:dev", **container}],  # any image with Python
                    "volumes": [{"name": "www", "emptyDir": {}}],
                },
            },
        },
    }


MANIFEST = [
    deployment(
        "web",
        {
            "command": ["python", "-m", "http.server", "8000", "--directory", "/srv"],
            "ports": [{"name": "http", "containerPort": 8000}],
            "securityContext": {"readOnlyRootFilesystem": True},
            "volumeMounts": [{"name": "www", "mountPath": "/srv"}],
            # ready while /srv/ready exists, alive while /srv/die does not; a probe may take up to
            # SLOW seconds (the default, 1 s, is missed on a busy machine: a restart nobody asked for)
            "readinessProbe": {
                "httpGet": {"path": "/ready", "port": "http"},
                "periodSeconds": 1,
                "timeoutSeconds": SLOW,
                "failureThreshold": 1,
            },
            "livenessProbe": {
                "exec": {"command": ["test", "!", "-e", "/srv/die"]},
                "periodSeconds": 1,
                "timeoutSeconds": SLOW,
                "failureThreshold": 1,
            },
        },
    ),
    deployment("client", {"command": ["sleep", "3600"]}),
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    },
]
FETCH = f"import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout={SLOW}).status)"


def until(condition: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture
def web(play: Callable[..., Cluster]) -> Cluster:
    cluster = play(MANIFEST, f"{PROJECT}-runtime")
    cluster.backoff = 1.0  # restart at once: the back-off itself is not under test
    return cluster


def runner(cluster: Cluster, name: str) -> Any:
    (found,) = [r for r in cluster.runners if r.pod.owner == f"Deployment/{name}"]
    assert until(lambda: found.current is not None and found.state.phase == "Running")
    return found


def test_a_service_reaches_ready_pods_only(web: Cluster) -> None:
    server, client = runner(web, "web"), runner(web, "client")

    def status() -> str:
        result = client.current.exec_run(["python", "-c", FETCH, "http://web.default.svc.cluster.local/ready"])
        return result.output.decode().strip().splitlines()[-1]

    assert not server.state.ready
    assert "Connection refused" in status()  # the name resolves, nothing is behind it
    server.current.exec_run(["touch", "/srv/ready"])
    assert until(lambda: server.state.ready)
    # Ready means reachable: the Service sends to the pod from the moment it is reported ready.
    assert status() == "200"  # Service port 80 -> the pod's port "http" (8000)
    server.current.exec_run(["rm", "/srv/ready"])
    assert until(lambda: not server.state.ready)
    assert until(lambda: "Connection refused" in status())


def test_a_service_update_is_in_force_when_it_returns(web: Cluster) -> None:
    # `nginx -s reload` only signals the proxy's master; update() must not return before the new
    # endpoints are served, or a pod reported ready would still be unreachable for a moment.
    server, proxy = runner(web, "web"), web.proxy("web")
    proxy.container.reload()
    address = proxy.container.attrs["NetworkSettings"]["Networks"][web.network]["IPAddress"]

    def fetch(url: str) -> str:
        try:
            return str(urllib.request.urlopen(url, timeout=SLOW).status)  # noqa: S310 (http)
        except (urllib.error.URLError, ConnectionError) as error:
            return str(getattr(error, "reason", error))

    assert until(lambda: bool(server.ip) and fetch(f"http://{server.ip}:8000/") == "200")  # the pod serves
    for _ in range(5):
        proxy.update([(server.ip, {"http": 8000})])
        assert fetch(f"http://{address}/") == "200"
        proxy.update([])
        assert "Connection refused" in fetch(f"http://{address}/")


def test_a_failed_liveness_probe_restarts_the_container(web: Cluster) -> None:
    server = runner(web, "web")
    first = server.current.id
    server.current.exec_run(["touch", "/srv/die"])
    # Killed for it (the container is stopped before its end is recorded); the file is removed
    # before the next container starts, so that one lives.
    assert until(lambda: "livenessProbe exec test ! -e /srv/die" in server.state.last_exit)
    (server.volume_dir("www") / "die").unlink()  # the emptyDir outlives the container, as in a pod
    assert until(lambda: server.current.id != first and server.state.phase == "Running")
    assert until(lambda: server.current.exec_run(["true"]).exit_code == 0)
    assert server.state.restarts == 1
    # Not ready again yet: its line says why the previous container ended (kubectl's "Last State").
    assert any("last exit: livenessProbe exec test ! -e /srv/die" in line for line in web.problems()), web.problems()
