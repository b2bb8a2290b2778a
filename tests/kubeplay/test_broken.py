"""A deliberately broken manifest fails with a message that names the object and the cause.

Each case breaks one thing in the rendered dev overlay, in a workload that needs nothing else
(Redis, Postgres), and plays that workload alone; a control plays the same two unbroken, so a
failure comes from the break, not from playing a subset. All cases run at once; each ends as soon
as its outcome shows (ready, or a message naming what the case expects), within DEADLINE seconds:
on a busy machine Postgres's first start alone can take longer than a fixed short wait.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import PROJECT, Cluster, Manifests, NotReady, base_image, images

pytestmark = pytest.mark.own_project(minutes=1.4)

Docs = list[dict[str, Any]]
DEADLINE = 180
POLL = 5  # seconds per look at the message


def workload(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def container_of(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    return workload(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def wrong_mount_path(docs: Docs) -> None:
    """Redis's ACL file mounted one directory off: --aclfile names a file that is not there."""
    mounts = container_of(docs, "StatefulSet", "redis")["volumeMounts"]
    (secrets,) = [m for m in mounts if m["name"] == "secrets"]
    secrets["mountPath"] = "/run/secrets/redis-acl"


def wrong_probe_port(docs: Docs) -> None:
    """Redis's startup probe on a port nothing listens on."""
    container_of(docs, "StatefulSet", "redis")["startupProbe"]["tcpSocket"]["port"] = 6380


def writable_path_missing(docs: Docs) -> None:
    """Postgres without its emptyDir for the socket and lock files, under a read-only root."""
    container = container_of(docs, "StatefulSet", "postgres")
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != "/var/run/postgresql"]


def unbroken(docs: Docs) -> None:
    """The control: both workloads as rendered."""


CASES: dict[str, tuple[Callable[[Docs], None], list[str]]] = {
    "wrong-mount-path": (wrong_mount_path, ["StatefulSet/redis pod redis-0", "users.acl"]),
    "wrong-probe-port": (wrong_probe_port, ["StatefulSet/redis pod redis-0", "startupProbe tcpSocket port 6380"]),
    "writable-path-missing": (writable_path_missing, ["StatefulSet/postgres pod postgres-0", "Read-only file system"]),
}


def play_alone(docs: Docs, breaks: Callable[[Docs], None], project: str, state_dir: Path, expected: list[str]) -> str:
    """What kubeplay says of Redis and Postgres with ``breaks`` applied: '' once both are ready, or
    its not-ready message once that names everything ``expected`` (or at the deadline). A restarted
    container's cause can take a second attempt to show (Postgres's first one ends in initdb's
    pg_ctl output)."""
    wanted = copy.deepcopy([d for d in docs if d["kind"] in ("ConfigMap", "Secret", "Service")])
    wanted += copy.deepcopy([d for d in docs if d["kind"] == "StatefulSet"])
    breaks(wanted)
    cluster = Cluster(
        Manifests.load([yaml.safe_dump_all(wanted)]),
        project=project,
        state_dir=state_dir,
        images=images(),
        proxy_image=base_image("NGINX_IMAGE"),
    )
    deadline = time.monotonic() + DEADLINE
    with cluster:
        while True:
            try:
                cluster.wait_ready(POLL)
                return ""
            except NotReady as error:
                message = str(error)
            named = expected and all(part in message for part in expected)
            if named or cluster.gave_up() or time.monotonic() > deadline:
                return message


@pytest.fixture(scope="module")
def outcomes(dev_overlay: Docs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    results: dict[str, str] = {}
    cases = CASES | {"control": (unbroken, [])}

    def run(name: str, case: tuple[Callable[[Docs], None], list[str]]) -> None:
        state = tmp_path_factory.mktemp(name)
        results[name] = play_alone(dev_overlay, case[0], f"{PROJECT}-{name}", state, case[1])

    threads = [threading.Thread(target=run, args=item) for item in cases.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_the_unbroken_workloads_get_ready_alone(outcomes: dict[str, str]) -> None:
    assert outcomes["control"] == ""


@pytest.mark.parametrize("case", CASES)
def test_a_broken_manifest_names_the_object_and_the_cause(outcomes: dict[str, str], case: str) -> None:
    message = outcomes[case]
    assert message.startswith("not ready after"), message
    for expected in CASES[case][1]:
        assert expected in message, message
