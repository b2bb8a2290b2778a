"""kubeplay's translation of pod specs into container settings, offline (no Docker)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kubeplay.manifests import ManifestError, expand, quantity
from kubeplay.translate import Pod, pods_of

from .conftest import Manifests

IMAGE_USERS = {"app:1": "10001:10001", "rooty:1": "", "named:1": "postgres"}


def image_user(image: str) -> str:
    return IMAGE_USERS[image]


def manifests(container: dict[str, Any], pod: dict[str, Any] | None = None, *extra: dict[str, Any]) -> Manifests:
    found = Manifests()
    for obj in extra:
        found.add(obj)
    found.add(
        {
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "app:1", **container}], **(pod or {})},
                },
            },
        }
    )
    return found


def translate(found: Manifests, images: dict[str, str] | None = None) -> list[Pod]:
    return pods_of(found, found.workloads[0], images=images or {}, image_user=image_user)


SECRET = {
    "kind": "Secret",
    "metadata": {"name": "creds"},
    "data": {"password": base64.b64encode(b"s3cret").decode(), "user": base64.b64encode(b"ada").decode()},
}
CONFIG = {"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"MODE": "fast", "not a name": "x"}}


def test_replicas_command_args_and_image_mapping() -> None:
    pods = translate(manifests({"command": ["serve"], "args": ["--port", "8000"]}), images={"app:1": "local/app:1"})
    assert [p.owner for p in pods] == ["Deployment/web", "Deployment/web"]
    assert len({p.name for p in pods}) == 2
    container = pods[0].container
    assert (container.image, container.entrypoint, container.args) == ("local/app:1", ["serve"], ["--port", "8000"])
    assert pods[0].restart_policy == "Always"


def test_env_from_then_env_with_references_and_secret_keys() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "creds"}, "prefix": "DB_"}],
        "env": [
            {"name": "MODE", "value": "slow"},
            {"name": "URL", "value": "pg://$(DB_user)@db/$(MISSING)/$$(DB_user)"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    }
    (pod, _) = translate(manifests(container, None, SECRET, CONFIG))
    env = pod.container.env
    assert env["MODE"] == "slow"  # env wins over envFrom
    assert "not a name" not in env  # keys that are not variable names are skipped, as by the kubelet
    assert env["DB_password"] == "s3cret"
    assert env["URL"] == "pg://ada@db/$(MISSING)/$(DB_user)"
    assert env["PW"] == "s3cret"
    assert "GONE" not in env
    assert env["POD"] == pod.name


def test_a_missing_secret_names_the_object() -> None:
    with pytest.raises(ManifestError, match=r"Deployment/web container web: Secret 'creds' not found"):
        translate(manifests({"envFrom": [{"secretRef": {"name": "creds"}}]}))


def test_security_context_pod_then_container() -> None:
    pod = {"securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000, "supplementalGroups": [4000]}}
    container = {
        "securityContext": {
            "runAsUser": 1001,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        }
    }
    (translated, _) = translate(manifests(container, pod))
    c = translated.container
    assert (c.user, c.group_add, c.read_only) == ("1001:2000", ["4000", "3000"], True)
    assert (c.cap_drop, c.cap_add, c.security_opt) == (["ALL"], ["CAP_NET_BIND_SERVICE"], ["no-new-privileges:true"])


@pytest.mark.parametrize(
    ("image", "message"),
    [("rooty:1", "image will run as root"), ("named:1", r"image has non-numeric user \(postgres\)")],
)
def test_run_as_non_root_is_checked_against_the_image(image: str, message: str) -> None:
    found = manifests({"image": image, "securityContext": {"runAsNonRoot": True}})
    with pytest.raises(ManifestError, match=f"Deployment/web container web: container has runAsNonRoot and {message}"):
        translate(found)


def test_image_user_passes_run_as_non_root() -> None:
    (pod, _) = translate(manifests({"securityContext": {"runAsNonRoot": True}}))
    assert pod.container.user == "10001"


def test_secret_volume_items_modes_and_read_only_mounts() -> None:
    pod = {
        "securityContext": {"fsGroup": 3000},
        "volumes": [
            {
                "name": "s",
                "secret": {"secretName": "creds", "defaultMode": 0o400, "items": [{"key": "password", "path": "pw"}]},
            },
            {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ],
    }
    container = {"volumeMounts": [{"name": "s", "mountPath": "/run/s"}, {"name": "scratch", "mountPath": "/tmp"}]}
    (translated, _) = translate(manifests(container, pod, SECRET))
    assert translated.volumes["s"].files == {"pw": (b"s3cret", 0o440)}  # fsGroup: group-readable
    assert translated.volumes["scratch"].size == 64 * 2**20
    mounts = {m.path: m.read_only for m in translated.container.mounts}
    assert mounts == {"/run/s": True, "/tmp": False}  # a Secret is mounted read-only whatever the spec says


def test_a_missing_key_and_a_mount_without_volume_name_the_object() -> None:
    pod = {"volumes": [{"name": "s", "secret": {"secretName": "creds", "items": [{"key": "nope", "path": "x"}]}}]}
    with pytest.raises(ManifestError, match=r"Deployment/web: key 'nope' is not in creds"):
        translate(manifests({}, pod, SECRET))
    with pytest.raises(ManifestError, match=r"Deployment/web container web: volumeMount 'data' names no volume"):
        translate(manifests({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}))


def test_probes_resolve_named_ports() -> None:
    container = {
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": 9000}},
    }
    (pod, _) = translate(manifests(container))
    ready, alive = sorted(pod.container.probes, key=lambda p: p.kind, reverse=True)
    assert (ready.kind, ready.port, ready.path, ready.period, ready.failure_threshold) == (
        "readinessProbe",
        8000,
        "/readyz",
        5,
        3,
    )
    assert (alive.kind, alive.action, alive.port) == ("livenessProbe", "tcpSocket", 9000)
    with pytest.raises(ManifestError, match=r"Deployment/web container web: readinessProbe port 'htp' is not a port"):
        translate(manifests({**container, "readinessProbe": {"httpGet": {"port": "htp"}}}))


def test_resources_limits() -> None:
    (pod, _) = translate(manifests({"resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}}))
    assert (pod.container.nano_cpus, pod.container.mem_limit) == (500_000_000, 256 * 2**20)
    assert quantity("2") == 2
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity("12 apples")


def test_expand_leaves_unknown_references() -> None:
    assert expand("$(A)-$(B)-$$(A)", {"A": "1"}) == "1-$(B)-$(A)"


def test_unsupported_kinds_and_sidecars_are_refused() -> None:
    with pytest.raises(ManifestError, match="DaemonSet/x: kind DaemonSet is not supported"):
        Manifests().add({"kind": "DaemonSet", "metadata": {"name": "x"}})
    found = manifests({})
    found.workloads[0]["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "app:1"})
    with pytest.raises(ManifestError, match="Deployment/web: 2 containers in one pod"):
        translate(found)


def test_statefulset_pods_claims_and_job_retries() -> None:
    found = Manifests()
    template = {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "app:1"}]}}
    claim = {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
    found.add(
        {
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {"replicas": 2, "serviceName": "db", "template": template, "volumeClaimTemplates": [claim]},
        }
    )
    found.add({"kind": "Job", "metadata": {"name": "init"}, "spec": {"backoffLimit": 2, "template": template}})
    first, second = translate(found)
    assert (first.name, second.name, first.subdomain) == ("db-0", "db-1", "db")
    assert (first.volumes["data"].kind, first.volumes["data"].claim) == ("claim", "data-db-0")
    (job,) = pods_of(found, found.workloads[1], images={}, image_user=image_user)
    assert (job.owner, job.restart_policy, job.backoff_limit) == ("Job/init", "Never", 2)
