"""What each overlay promises: dev small, prod scaled and guarded, prod-managed-db without Postgres."""

from __future__ import annotations

import re
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml

from .conftest import K8S, OVERLAYS, cpu_millis, quantity_bytes, render

if TYPE_CHECKING:
    from .conftest import Rendering, Workload

SERVICES = ("api", "auth", "nginx")


def _requests(container: dict[str, Any]) -> tuple[int, float]:
    requests = container["resources"]["requests"]
    return quantity_bytes(requests["memory"]), cpu_millis(requests["cpu"])


def _no_larger(a: tuple[int, float], b: tuple[int, float]) -> bool:
    """Memory and CPU of ``a`` each at most ``b``'s."""
    return all(x <= y for x, y in zip(a, b, strict=True))


def _storage(workload: Workload) -> int:
    """Bytes requested by all of the workload's claims."""
    return sum(
        quantity_bytes(c["spec"]["resources"]["requests"]["storage"])
        for c in workload.obj["spec"]["volumeClaimTemplates"]
    )


def test_base_runs_two_of_each_with_autoscaling_and_disruption_budgets(renderings: dict[str, Rendering]) -> None:
    base = renderings["base"]
    for name in SERVICES:
        assert base.get("Deployment", name)["spec"]["replicas"] >= 2
        assert base.has("PodDisruptionBudget", name)
    assert {h["metadata"]["name"] for h in base.of_kind("HorizontalPodAutoscaler")} == {"api", "auth"}


def test_dev_is_one_small_pod_each_without_hpa_or_pdb(renderings: dict[str, Rendering]) -> None:
    dev, prod = renderings["dev"], renderings["prod"]
    for name in SERVICES:
        assert dev.get("Deployment", name)["spec"]["replicas"] == 1
    assert dev.of_kind("HorizontalPodAutoscaler") == []
    assert dev.of_kind("PodDisruptionBudget") == []
    for w in dev.workloads:
        for c in w.containers():
            bigger = prod.workload(w.name).container(c["name"])
            assert _no_larger(_requests(c), _requests(bigger)), f"{w.name}/{c['name']}"


def test_prod_runs_three_with_hpa_and_pdb_and_larger_resources(renderings: dict[str, Rendering]) -> None:
    prod, base = renderings["prod"], renderings["base"]
    for name in SERVICES:
        assert prod.get("Deployment", name)["spec"]["replicas"] == 3
        assert prod.get("PodDisruptionBudget", name)["spec"]["minAvailable"] == 2
    for name in ("api", "auth"):
        hpa = prod.get("HorizontalPodAutoscaler", name)["spec"]
        assert hpa["minReplicas"] == 3
        assert hpa["maxReplicas"] >= 6
    # Never smaller than the base; the serving pods and the database get more memory and CPU.
    for w in (w for w in prod.workloads if base.has(w.kind, w.name)):  # not the observability component's
        for c in w.containers():
            small = base.workload(w.name).container(c["name"])
            assert _no_larger(_requests(small), _requests(c)), f"{w.name}/{c['name']}"
    for name in (*SERVICES, "postgres"):
        c = prod.workload(name).container(name)
        small = base.workload(name).container(name)
        assert all(p > b for p, b in zip(_requests(c), _requests(small), strict=True)), name
    for name in ("postgres", "redis"):
        assert _storage(prod.workload(name)) > _storage(base.workload(name)), f"{name}: prod volume not larger"


def test_managed_db_variant_drops_postgres_and_reads_the_urls_from_a_secret(renderings: dict[str, Rendering]) -> None:
    managed, prod = renderings["prod-managed-db"], renderings["prod"]
    assert not managed.has("StatefulSet", "postgres")
    assert not managed.has("Service", "postgres")
    assert not managed.has("NetworkPolicy", "postgres")
    expected = {("api", "api"): "api", ("api", "migrate"): "api", ("auth", "auth"): "auth"}
    expected |= {("auth", "migrate"): "auth", ("db-init", "db-init"): "admin"}
    for (workload, container), key in expected.items():
        env = managed.env(managed.workload(workload).container(container))
        name = "DATABASE_ADMIN_URL" if workload == "db-init" else "DATABASE_URL"
        assert env[name] == {"secretKeyRef": {"name": "wharf-database-urls", "key": key}}
    for data in managed.config_maps().values():
        assert "DATABASE_URL" not in data
        assert "DATABASE_ADMIN_URL" not in data
    # Everything else is prod as it is.
    for name in SERVICES:
        assert managed.get("Deployment", name)["spec"]["replicas"] == prod.get("Deployment", name)["spec"]["replicas"]

    def objects(r: Rendering) -> set[tuple[str, str]]:  # ConfigMap names without their content hash
        return {
            (
                d["kind"],
                re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])
                if d["kind"] == "ConfigMap"
                else d["metadata"]["name"],
            )
            for d in r.docs
        }

    dropped = {("StatefulSet", "postgres"), ("Service", "postgres"), ("NetworkPolicy", "postgres")}
    dropped |= {("CronJob", name) for name in ("backup-full", "backup-diff", "backup-verify")}
    dropped |= {("Deployment", "backup-metrics"), ("Service", "backup-metrics")}
    added = {("NetworkPolicy", "external-postgres-egress")}
    assert objects(prod) - objects(managed) == dropped
    assert objects(managed) - objects(prod) == added


def test_the_ingress_class_is_the_overlays_choice(renderings: dict[str, Rendering]) -> None:
    for name in OVERLAYS:
        source = K8S / "overlays" / name / "ingress-class.yaml"
        if not source.exists():  # prod-managed-db inherits prod's
            source = K8S / "overlays/prod/ingress-class.yaml"
        wanted = yaml.safe_load(source.read_text())["spec"]["ingressClassName"]
        (ingress,) = renderings[name].of_kind("Ingress")
        assert ingress["spec"]["ingressClassName"] == wanted


def test_changing_an_overlays_ingress_class_changes_the_rendered_ingress(kubectl: str, tmp_path: Path) -> None:
    """The class in the overlay's ingress-class.yaml is really applied (base and overlays both say
    `nginx`, so the test above alone would pass with the patch left out)."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    for name in ("dev", "prod"):
        source = copy / "overlays" / name / "ingress-class.yaml"
        patch = yaml.safe_load(source.read_text())
        patch["spec"]["ingressClassName"] = f"traefik-{name}"
        source.write_text(yaml.safe_dump(patch))
    for name in OVERLAYS:
        (ingress,) = [d for d in render(kubectl, copy / "overlays" / name) if d["kind"] == "Ingress"]
        wanted = "traefik-dev" if name == "dev" else "traefik-prod"  # prod-managed-db is prod's
        assert ingress["spec"]["ingressClassName"] == wanted, name


def test_databases_keep_their_data_on_persistent_volume_claims(overlay: Rendering) -> None:
    """PostgreSQL's PGDATA and Redis's append-only file (its working directory /data) live on the
    StatefulSets' claims, not in an emptyDir or the container's filesystem."""
    wanted = {"postgres": None, "redis": "/data"}
    for name, data_dir in wanted.items():
        if not overlay.has("StatefulSet", name):
            assert name == "postgres"
            assert overlay.name == "prod-managed-db"
            continue
        w = overlay.workload(name)
        c = w.container(name)
        claims = {t["metadata"]["name"] for t in w.obj["spec"]["volumeClaimTemplates"]}
        assert claims, f"{name}: no volumeClaimTemplates"
        if data_dir is not None:  # redis writes into its working directory, the image's WORKDIR
            assert "workingDir" not in c
            assert "--dir" not in c.get("args", [])
        path = PurePosixPath(data_dir or overlay.env(c)["PGDATA"])
        mounts = [m for m in c["volumeMounts"] if PurePosixPath(m["mountPath"]) in (path, *path.parents)]
        assert mounts, f"{name}: nothing mounted at {path}"
        deepest = max(mounts, key=lambda m: len(m["mountPath"]))
        assert deepest["name"] in claims, f"{name}: {path} is on volume {deepest['name']}, not a claim"


def test_migrations_finish_before_the_apps_serve(overlay: Rendering) -> None:
    for name in ("api", "auth"):
        pod = overlay.workload(name).pod
        (migrate,) = pod["initContainers"]  # init containers complete before any app container starts
        assert migrate["args"] == ["flask", "db", "upgrade"]
        assert "command" not in migrate, "the image's own entrypoint runs, as in compose"
        assert migrate["image"] == pod["containers"][0]["image"], "the same release migrates and serves"
    job = overlay.get("Job", "db-init")["spec"]
    assert job["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert job["backoffLimit"] >= 3
    assert job["ttlSecondsAfterFinished"] > 0, "a finished Job goes away, so the next apply re-creates it"
