"""The objects fit together: selectors, ports, probes the services really serve, referenced names."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from flask import Flask

from .conftest import ROOT, nginx_effective_settings

if TYPE_CHECKING:
    from .conftest import Rendering, Workload

NGINX_TEMPLATES = ROOT / "deploy/nginx/templates"
# Created by the operator only with k8s/components/external-postgres (k8s/README.md documents it).
OPERATOR_SECRETS = {"wharf-database-urls": {"auth", "api", "admin"}}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {
            "In": present and value in expr.get("values", []),
            "NotIn": not present or value not in expr.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def test_workload_selectors_match_their_own_pods_and_no_other(overlay: Rendering) -> None:
    for w in overlay.workloads:
        if w.kind in ("Job", "CronJob"):
            continue
        selector = w.obj["spec"]["selector"]
        assert _selects(selector, w.labels), w.name
        others = [o.name for o in overlay.workloads if o.name != w.name and _selects(selector, o.labels)]
        assert others == [], f"{w.name}'s selector also matches {others}"


def test_every_service_selects_pods_and_targets_a_port_they_expose(overlay: Rendering) -> None:
    for svc in overlay.of_kind("Service"):
        name = svc["metadata"]["name"]
        selector = {"matchLabels": svc["spec"]["selector"]}  # a Service selects by equality only
        assert selector["matchLabels"], f"Service {name} has no selector"
        targets = [w for w in overlay.workloads if w.kind not in ("Job", "CronJob") and _selects(selector, w.labels)]
        assert len(targets) == 1, f"Service {name} selects {[t.name for t in targets]}"
        (target,) = targets
        # Named after its workload (nginx's upstreams use the names); the observability component's
        # headless <workload>-metrics list each pod's address for Prometheus's DNS discovery.
        discovery = name == f"{target.name}-metrics" and svc["spec"].get("clusterIP") == "None"
        assert target.name == name or discovery, "each Service is named after its workload"
        for port in svc["spec"]["ports"]:
            assert str(port["targetPort"]) in target.ports(), f"Service {name}: no port {port['targetPort']}"
        if target.kind == "StatefulSet":
            assert target.obj["spec"]["serviceName"] == name
            assert svc["spec"].get("clusterIP") == "None", f"{name}: a StatefulSet's Service is headless"


def test_ingress_routes_to_the_nginx_service(overlay: Rendering) -> None:
    (ingress,) = overlay.of_kind("Ingress")
    assert ingress["spec"]["ingressClassName"], "the ingress class is set by the overlay"
    backends = [ingress["spec"]["defaultBackend"]["service"]]
    backends += [
        p["backend"]["service"] for r in ingress["spec"].get("rules", []) for p in r.get("http", {}).get("paths", [])
    ]
    nginx = overlay.get("Service", "nginx")
    for backend in backends:
        assert backend["name"] == "nginx"
        assert backend["port"].get("name") in {p["name"] for p in nginx["spec"]["ports"]}


def test_pdbs_and_hpas_point_at_existing_deployments(overlay: Rendering) -> None:
    for pdb in overlay.of_kind("PodDisruptionBudget"):
        matched = [w for w in overlay.workloads if _selects(pdb["spec"]["selector"], w.labels)]
        assert [w.kind for w in matched] == ["Deployment"], pdb["metadata"]["name"]
        replicas = matched[0].obj["spec"]["replicas"]
        assert 1 <= pdb["spec"]["minAvailable"] < replicas, "a drain must stay possible"
    for hpa in overlay.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = overlay.get(ref["kind"], ref["name"])
        assert hpa["spec"]["minReplicas"] == target["spec"]["replicas"]
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        assert ref["name"] in {"api", "auth"}


# Nothing listens here: the apps are built as they start in a pod, with Postgres and Redis down.
UNREACHABLE = {
    "database_url": "postgresql://probe@127.0.0.1:1/wharf",
    "redis_url": "redis://127.0.0.1:1/0",
}


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Flask]:
    """The real api and auth applications (every route they register), their dependencies down."""
    from wharf_api import create_app as create_api
    from wharf_api.settings import ApiSettings
    from wharf_auth import create_app as create_auth
    from wharf_auth.settings import AuthSettings
    from wharf_common import devsecrets

    secrets = tmp_path_factory.mktemp("secrets")
    keys = secrets / devsecrets.SIGNING_KEYS_DIR
    keys.mkdir(parents=True)
    devsecrets.add_signing_key(secrets)
    return {
        "api": create_api(ApiSettings(**UNREACHABLE, auth_url="http://127.0.0.1:1")),
        "auth": create_auth(
            AuthSettings(**UNREACHABLE, signing_keys_dir=keys, mfa_encryption_key="k8s wiring tests' key, 32+ chars")
        ),
    }


def _image_port() -> int:
    """The port gunicorn binds (gunicorn_conf.PORT), which the images' health check (PORT) probes."""
    bound = re.search(
        r"^PORT = (\d+)", (ROOT / "libs/wharf-common/src/wharf_common/gunicorn_conf.py").read_text(), re.M
    )
    probed = re.search(r"\bPORT=(\d+)", (ROOT / "services/Dockerfile").read_text())
    assert bound, "gunicorn_conf.py no longer sets PORT"
    assert probed, "services/Dockerfile no longer sets PORT"
    assert bound[1] == probed[1], "the image's health check probes another port than gunicorn binds"
    return int(bound[1])


def _http_probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["httpGet"] for k, v in container.items() if k.endswith("Probe") and "httpGet" in v}


def test_app_probes_use_paths_and_ports_the_services_serve(overlay: Rendering, apps: dict[str, Flask]) -> None:
    """Each probe asks the real application: liveness and startup answer 200 with Postgres and
    Redis down (a database outage restarts nothing), readiness answers 503 (the pod leaves the
    Service), and the port is the one gunicorn binds in that container (PORT)."""
    for name in ("api", "auth"):
        (c,) = overlay.workload(name).pod["containers"]
        ports = overlay.workload(name).ports()
        bound = _image_port()
        probes = _http_probes(c)
        assert set(probes) == {"startupProbe", "livenessProbe", "readinessProbe"}, f"{name}: {set(probes)}"
        assert probes["livenessProbe"]["path"] == "/healthz", "liveness checks the process only"
        assert probes["startupProbe"]["path"] == "/healthz"
        assert probes["readinessProbe"]["path"] == "/readyz", "readiness checks Postgres and Redis"
        client = apps[name].test_client()
        for kind, probe in probes.items():
            assert probe.get("scheme", "HTTP") == "HTTP"
            assert ports[str(probe["port"])] == bound, f"{name} {kind}: port {probe['port']} is not {bound}"
            status = client.get(probe["path"]).status_code
            assert status == (503 if kind == "readinessProbe" else 200), f"{name} {kind} {probe['path']}: {status}"


def test_nginx_probes_and_port_match_its_templates(overlay: Rendering) -> None:
    nginx = overlay.workload("nginx")
    (c,) = nginx.pod["containers"]
    config = "\n".join(p.read_text() for p in NGINX_TEMPLATES.rglob("*.template"))
    assert re.search(r"listen \$\{NGINX_PORT\}", config)
    env = overlay.env(c)
    port = int(env["NGINX_PORT"])
    assert nginx.ports()["http"] == port
    # The HTTPS listener (tls.conf) is on, on the port the container and the Service declare.
    assert re.search(r"listen \$\{NGINX_TLS_PORT\} ssl", config)
    assert env["NGINX_TLS"] == "on"
    assert nginx.ports()["https"] == int(env["NGINX_TLS_PORT"]) != port
    service_ports = {p["name"]: p for p in overlay.get("Service", "nginx")["spec"]["ports"]}
    assert service_ports["http"]["targetPort"] == "http"
    assert service_ports["https"] == {"name": "https", "port": 443, "targetPort": "https"}
    served = set(re.findall(r"location = (/\S+)", config))
    for probe in _http_probes(c).values():
        assert probe["path"] in served, f"nginx does not serve {probe['path']} itself"
        assert nginx.ports()[str(probe["port"])] == port


def test_nginx_upstreams_name_the_app_services_and_their_ports(overlay: Rendering) -> None:
    env = overlay.env(overlay.workload("nginx").pod["containers"][0])
    for name in ("api", "auth"):
        host, port = env[f"{name.upper()}_UPSTREAM"].split(":")
        service = overlay.get("Service", host)
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}


def _secret_refs(w: Workload) -> dict[str, set[str]]:
    """Secret name -> keys this workload needs (None in the set: the whole secret, any keys)."""
    refs: dict[str, set[str]] = {}
    for volume in w.pod.get("volumes", []):
        if "secret" in volume:
            keys = {i["key"] for i in volume["secret"].get("items", [])}
            refs.setdefault(volume["secret"]["secretName"], set()).update(keys)
    for c in w.containers():
        for item in c.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.setdefault(ref["name"], set()).add(ref["key"])
    return refs


def test_every_referenced_secret_and_key_is_created_by_the_secrets_script(
    overlay: Rendering, secret_manifests: list[dict[str, Any]]
) -> None:
    created = {s["metadata"]["name"]: set(s["data"]) for s in secret_manifests}
    assert all(s["metadata"]["namespace"] == "wharf" for s in secret_manifests)
    needed: dict[str, set[str]] = {}
    for w in overlay.workloads:
        for name, keys in _secret_refs(w).items():
            needed.setdefault(name, set()).update(keys)
    for name, keys in needed.items():
        available = created.get(name, OPERATOR_SECRETS.get(name))
        assert available is not None, f"{overlay.name}: secret {name} is referenced but nothing creates it"
        assert keys <= available, f"{overlay.name}: secret {name} lacks {keys - available}"
    assert any(k.endswith(".pem") for k in created["wharf-auth-signing-keys"])
    readme = (ROOT / "k8s/README.md").read_text()
    for name, keys in OPERATOR_SECRETS.items():
        assert name in readme
        for key in keys:
            assert f"--from-literal={key}=" in readme


def test_no_secret_is_committed_and_configmaps_hold_no_credentials(any_rendering: Rendering) -> None:
    assert any_rendering.of_kind("Secret") == []
    for name, data in any_rendering.config_maps().items():
        for key, value in data.items():
            assert not re.search(r"secret|passw|private.?key|credential", f"{key}={value}", re.IGNORECASE), (name, key)
            assert not re.search(r"://[^/@]*:[^/@]*@", value), f"{name}.{key} embeds a password in a URL"


def test_every_configmap_and_volume_reference_resolves(overlay: Rendering) -> None:
    maps = overlay.config_maps()
    for w in overlay.workloads:
        for volume in w.pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps
        for c in w.containers():
            overlay.env(c)  # asserts every envFrom ConfigMap exists
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in maps[ref["name"]]


def _metrics_port_default() -> int:
    """The port the metrics server of every api/auth pod listens on (gunicorn_conf.METRICS_PORT)."""
    source = (ROOT / "libs/wharf-common/src/wharf_common/gunicorn_conf.py").read_text()
    match = re.search(r"^METRICS_PORT = (\d+)", source, re.MULTILINE)
    assert match, "gunicorn_conf.py no longer sets METRICS_PORT as this test expects"
    return int(match[1])


def _compose_scrape_ports() -> dict[str, int]:
    """compose's Prometheus (profile observability): the port it scrapes on each api/auth replica."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    return {job["job_name"]: sd["port"] for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])}


def test_monitoring_ports_are_declared_per_pod_and_on_no_service(overlay: Rendering) -> None:
    """What compose's Prometheus scrapes on every replica, each pod declares (a cluster's Prometheus
    discovers pod targets and PodMonitors by declared, named container ports), and no Service
    carries it (a Service would show a random replica's counters) but a headless one that lists
    every pod's address for discovery, as the observability component's do (clusterIP None, not-ready
    pods included)."""
    scraped = _compose_scrape_ports()
    assert set(scraped) == {"api", "auth"}
    balanced = [s for s in overlay.of_kind("Service") if s["spec"].get("clusterIP") != "None"]
    service_targets = {
        str(p["targetPort"])
        for s in balanced
        if s["spec"]["selector"].get("app.kubernetes.io/name") in ("api", "auth", "nginx")
        for p in s["spec"]["ports"]
    }
    for name in ("api", "auth"):
        workload = overlay.workload(name)
        (c,) = workload.pod["containers"]
        served = _metrics_port_default()
        assert served == scraped[name], f"compose scrapes {name} on {scraped[name]}, the pod serves {served}"
        assert workload.ports().get("metrics") == served, f"{overlay.name} {name}: metrics port not declared"
        assert {"metrics", str(served)}.isdisjoint(service_targets)
    nginx = overlay.workload("nginx")
    (c,) = nginx.pod["containers"]
    status = int(nginx_effective_settings(overlay.env(c))["NGINX_STATUS_PORT"])
    assert nginx.ports().get("status") == status, f"{overlay.name} nginx: stub_status port not declared"
    assert {"status", str(status)}.isdisjoint(service_targets)
