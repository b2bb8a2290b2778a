"""The dev overlay, rendered with the pinned kustomize, with Secrets from k8s/secrets.sh, played on
Docker by kubeplay. Images: the ones `make test` built (wharf/*:$WHARF_TAG, default dev) and the
Postgres and Redis images scripts/base-images.sh chooses, standing for postgres:17 and redis:8.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # kubeplay/ is a top-level package, run as `python -m kubeplay`

from conftest import base_image  # noqa: E402 (the root conftest's: the images `make test` uses)
from kubeplay.manifests import Manifests  # noqa: E402
from kubeplay.runtime import Cluster, NotReady, Publish  # noqa: E402

PROJECT = os.environ.get("WHARF_IT_PROJECT", "wharf-it") + "-k8s"
READY_TIMEOUT = 240  # the dev overlay converges in 20-40 s here; restarts back off 10, 20, 40 s


def images() -> dict[str, str]:
    tag = os.environ.get("WHARF_TAG", "dev")
    mapped = {"postgres:17": base_image("POSTGRES_IMAGE"), "redis:8": base_image("REDIS_IMAGE")}
    return mapped | {f"wharf/{name}:dev": f"wharf/{name}:{tag}" for name in ("api", "auth", "nginx", "postgres")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def dev_overlay(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every object of the dev overlay and its Secrets (fresh ones, generated like an operator would)."""
    kubectl = subprocess.run([ROOT / "scripts/k8s-tools.sh"], capture_output=True, text=True, check=True).stdout.strip()
    rendered = subprocess.run(
        [kubectl, "kustomize", ROOT / "k8s/overlays/dev"], capture_output=True, text=True, check=True
    ).stdout
    secrets = subprocess.run(
        [ROOT / "k8s/secrets.sh", "--dry-run", tmp_path_factory.mktemp("k8s-secrets")],
        env={**os.environ, "KUBECTL": kubectl, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for text in (rendered, secrets) for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture
def play(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start a Cluster of the given objects (removed, volumes and all, at the end of the test)."""
    started: list[Cluster] = []

    def start(docs: list[dict[str, Any]], project: str, *, publish: list[Publish] | None = None) -> Cluster:
        texts = [yaml.safe_dump_all(copy.deepcopy(docs))]
        cluster = Cluster(
            Manifests.load(texts),
            project=project,
            state_dir=tmp_path / project,
            images=images(),
            publish=publish or [],
            proxy_image=base_image("NGINX_IMAGE"),
        )
        started.append(cluster.start())
        return cluster

    yield start
    for cluster in started:
        cluster.down()


@pytest.fixture(scope="module")
def k8s_edge(dev_overlay: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dev overlay up and ready, with one Job of the CronJob backup-full run to completion (a
    full backup into postgres-0's repository claim); the URL of its nginx Service (port 80)."""
    port = free_port()
    texts = [yaml.safe_dump_all(dev_overlay)]
    manifests = Manifests.load(texts)
    manifests.add(manifests.job_from_cronjob("backup-full"))
    cluster = Cluster(
        manifests,
        project=PROJECT,
        state_dir=tmp_path_factory.mktemp("kubeplay"),
        images=images(),
        publish=[Publish("nginx", 80, port)],
        proxy_image=base_image("NGINX_IMAGE"),
    )
    with cluster:
        try:
            cluster.wait_ready(READY_TIMEOUT)
        except NotReady as error:
            pytest.fail(f"the dev overlay did not come up on kubeplay: {error}")
        yield f"http://127.0.0.1:{port}"
        # Nothing may have crashed or been killed while the tests ran.
        assert cluster.problems() == []
