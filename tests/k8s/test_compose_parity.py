"""Kubernetes and compose run the same images, with the same environment variable names, commands
and secret files. A setting or a service that one side gains and the other lacks fails here.
"""

from __future__ import annotations

import copy
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from wharf_common import devsecrets

from .conftest import COMPOSE_FILE

if TYPE_CHECKING:
    from .conftest import Rendering, Workload

# compose service -> (k8s workload, container)
COUNTERPARTS = {
    "postgres": ("postgres", "postgres"),
    "redis": ("redis", "redis"),
    "db-init": ("db-init", "db-init"),
    "auth-migrate": ("auth", "migrate"),
    "api-migrate": ("api", "migrate"),
    "auth": ("auth", "auth"),
    "auth-mail": ("auth-mail", "auth-mail"),
    "api": ("api", "api"),
    "nginx": ("nginx", "nginx"),
    # The profile `observability`: k8s/components/observability, in the prod overlays.
    "prometheus": ("prometheus", "prometheus"),
    "alertmanager": ("alertmanager", "alertmanager"),
    "mail-metrics": ("mail-metrics", "mail-metrics"),
}
OBSERVABILITY = {"prometheus", "alertmanager", "mail-metrics"}
WITH_OBSERVABILITY = {"prod", "prod-managed-db"}  # the overlays that include the component
NOT_IN_K8S = {
    "dev-secrets": "k8s/secrets.sh runs the same generator (wharf_common.devsecrets) outside the cluster",
    "postgres-check": "the pre-flight of compose's postgres entrypoint (deploy/postgres/entrypoint.sh)",
    # The rest of the compose profile `observability`: a cluster has these of its own.
    "nginx-exporter": "runs beside the cluster's Prometheus, reading each nginx pod's status port",
    "node-exporter": "the kubelet reports each claim's free space (kubelet_volume_stats_*, rules/disk.yml)",
    "blackbox-exporter": "the Ingress controller and cert-manager report the edge and its certificate",
    "mail-sink": "development only: a cluster's auth-mail sends to a real SMTP server (ConfigMap wharf-mail)",
    # The compose profile `acme`: on a cluster, cert-manager keeps the Secret wharf-nginx (k8s/README.md).
    "acme": "cert-manager renews the certificate in Secret wharf-nginx, which nginx reads on every handshake",
    "backup": "CronJobs backup-full, backup-diff and backup-verify hold its schedules; postgres-0's backup-metrics"
    " Deployment serves its metrics (test_backup_containers_read_the_compose_backup_settings)",
    "backup-restore": "make restore's one-shot: k8s/README.md, Backups, runs the same image by hand",
}
# Kubernetes containers that have no compose service of their own, each with its reason.
K8S_ONLY_CONTAINERS = {
    ("backup-metrics", "backup-metrics"): "compose's backup service serves the metrics; here CronJobs hold the"
    " schedules",
    ("backup-full", "backup"): "compose's backup service runs the schedules (BACKUP_FULL_SCHEDULE)",
    ("backup-diff", "backup"): "compose's backup service runs the schedules (BACKUP_DIFF_SCHEDULE)",
    ("backup-verify", "verify"): "compose's backup service runs the schedules (BACKUP_VERIFY_SCHEDULE)",
}
# Secrets compose mounts as a directory whose files vary (an off-host repository's key is optional).
SECRET_DIRECTORIES = {"backup"}
# Arguments Kubernetes adds to compose's command, each with its reason.
K8S_ONLY_ARGS = {
    # the backup Jobs reach postgres over a socket on the claim they share with it; compose shares
    # the socket directory itself (the volume `pgrun`)
    "postgres": ["-c", "unix_socket_directories=/var/run/postgresql,/var/lib/pgbackrest"],
}
# Differences that Kubernetes itself needs, each with its reason. Nothing else may differ.
K8S_ONLY_ENV = {("postgres", "postgres"): {"PGDATA"}}  # a volume's root holds lost+found
# Secret files compose mounts (a whole directory) but a Kubernetes container does without.
K8S_WITHHELD_SECRETS = {
    # it signs no token and reads no second factor
    "db-init": {"/run/secrets/auth/signing-keys/", "/run/secrets/auth/mfa_encryption_key"},
    # the mail worker signs no token, reads no second factor and has a Redis user of its own
    "auth-mail": {
        "/run/secrets/auth/signing-keys/",
        "/run/secrets/auth/redis_password",
        "/run/secrets/auth/mfa_encryption_key",
    },
}
# Entrypoints compose puts in front of the image's own, each with its reason.
COMPOSE_ONLY_ENTRYPOINTS = {
    "postgres": "deploy/postgres/entrypoint.sh sets the superuser password from the secret file on every"
    " start, for a volume that outlived its secrets directory (another clone, a regenerated one); it is not"
    " in the image, and kustomize loads no file from outside k8s/ (k8s/README.md: rotate it with psql)",
}
BUILD_ONLY_SECRETS = {"ca"}  # a build secret (the TLS proxy's CA), never mounted at run time
SECRETS_ROOT = PurePosixPath("/run/secrets")


def _expand(value: str) -> str:
    """``${NAME:-default}`` -> default, as compose does when NAME is unset (innermost first: a
    default may hold another, ``${PUBLIC_URL:-http://localhost:${WHARF_HTTP_PORT:-8080}/account}``)."""
    while True:
        expanded = re.sub(r"\$\{[A-Z0-9_]+:-([^${}]*)\}", r"\1", value)
        if expanded == value:
            return value
        value = expanded


@pytest.fixture(scope="module")
def compose() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def _compose_env(service: dict[str, Any]) -> set[str]:
    env = service.get("environment", {})
    return set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}


def _container(overlay: Rendering, compose_name: str) -> tuple[Workload, dict[str, Any]]:
    workload_name, container_name = COUNTERPARTS[compose_name]
    workload = overlay.workload(workload_name)
    return workload, workload.container(container_name)


def _present(overlay: Rendering, compose_name: str) -> bool:
    """Whether the rendering runs the counterpart: no postgres with a managed database, and the
    observability component only where an overlay includes it."""
    return any(w.name == COUNTERPARTS[compose_name][0] for w in overlay.workloads)


def _rendering_of(renderings: dict[str, Rendering], compose_name: str) -> Rendering:
    """Where a counterpart's defaults are: the base, or prod for the observability component."""
    return renderings["prod" if compose_name in OBSERVABILITY else "base"]


def test_every_compose_service_has_its_counterpart_and_back(
    compose: dict[str, dict[str, Any]], overlay: Rendering
) -> None:
    assert set(compose) == set(COUNTERPARTS) | set(NOT_IN_K8S)
    k8s = {(w.name, c["name"]) for w in overlay.workloads for c in w.containers()}
    expected = set(COUNTERPARTS.values()) | set(K8S_ONLY_CONTAINERS)
    if overlay.name == "prod-managed-db":  # a managed database: no StatefulSet, no backup Jobs
        expected = {(w, c) for w, c in expected if w != "postgres" and not w.startswith("backup")}
    if overlay.name not in WITH_OBSERVABILITY:
        expected -= {COUNTERPARTS[name] for name in OBSERVABILITY}
    assert k8s == expected


def env_name_differences(compose: dict[str, dict[str, Any]], overlay: Rendering) -> dict[str, dict[str, set[str]]]:
    """Per compose service: the variable names only compose sets, and those only Kubernetes sets."""
    out = {}
    for name, (workload, container) in COUNTERPARTS.items():
        if not _present(overlay, name):
            continue
        _, c = _container(overlay, name)
        k8s = set(overlay.env(c)) - K8S_ONLY_ENV.get((workload, container), set())
        ours = _compose_env(compose[name])
        if k8s != ours:
            out[name] = {"compose only": ours - k8s, "k8s only": k8s - ours}
    return out


def test_same_environment_variable_names(compose: dict[str, dict[str, Any]], overlay: Rendering) -> None:
    assert env_name_differences(compose, overlay) == {}


def test_a_setting_on_one_side_only_fails_the_parity_check(
    compose: dict[str, dict[str, Any]], renderings: dict[str, Rendering]
) -> None:
    """Guards the guard: a setting compose gains, or one a ConfigMap gains, is reported."""
    from .conftest import Rendering

    prod = renderings["prod"]
    grown = copy.deepcopy(compose)
    grown["nginx"]["environment"]["NEW_SETTING"] = "1"
    assert env_name_differences(grown, prod) == {"nginx": {"compose only": {"NEW_SETTING"}, "k8s only": set()}}

    docs = copy.deepcopy(prod.docs)
    (auth_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("wharf-auth-")]
    auth_map["data"]["NEW_SETTING"] = "1"
    only_k8s = {"compose only": set(), "k8s only": {"NEW_SETTING"}}
    grown_auth = {"auth": only_k8s, "auth-migrate": only_k8s, "auth-mail": only_k8s}  # one ConfigMap
    assert env_name_differences(compose, Rendering("grown", docs)) == grown_auth


# Values Kubernetes needs set differently from compose's defaults, each with its reason
# (k8s/README.md, "The edge (nginx) in a cluster" and "Rotate keys and passwords"). Every other
# default is compose's.
NO_MAIL_SINK = "a cluster has no development mail sink: a real SMTP server, with STARTTLS on port 587"
ROTATED_SECRET_REACHES_PODS_LATE = "the kubelet updates a mounted Secret in each pod up to a minute or so later"
K8S_OWN_VALUES = {
    ("nginx", "NGINX_HTTPS_REDIRECT_PORT"): "the Service's HTTPS port 443, not the host's 8443",
    ("nginx", "NGINX_UPSTREAM_DISCOVERY"): "reload: Services have a stable ClusterIP; no Docker DNS",
    ("nginx", "NGINX_DNS_INTERVAL"): "with reload, the watcher only notices a re-created Service",
    ("auth", "SIGNING_KEY_ACTIVATION_SECONDS"): ROTATED_SECRET_REACHES_PODS_LATE,
    ("auth-migrate", "SIGNING_KEY_ACTIVATION_SECONDS"): ROTATED_SECRET_REACHES_PODS_LATE,  # same ConfigMap
    ("auth-mail", "SIGNING_KEY_ACTIVATION_SECONDS"): ROTATED_SECRET_REACHES_PODS_LATE,  # same ConfigMap
    ("auth-mail", "SMTP_HOST"): NO_MAIL_SINK,
    ("auth-mail", "SMTP_PORT"): NO_MAIL_SINK,
    ("auth-mail", "SMTP_SECURITY"): NO_MAIL_SINK,
    ("alertmanager", "ALERT_SMTP_SMARTHOST"): NO_MAIL_SINK,
    ("alertmanager", "ALERT_SMTP_REQUIRE_TLS"): NO_MAIL_SINK,
    ("alertmanager", "ALERT_MAIL_TO"): "a real mailbox (k8s/components/observability/config/alerting.env)",
    ("alertmanager", "ALERT_MAIL_FROM"): "an address a real SMTP server lets you send as",
    ("prometheus", "API_REPLICAS"): "the prod overlays run three of each (the HPAs' minimum)",
    ("prometheus", "AUTH_REPLICAS"): "the prod overlays run three of each (the HPAs' minimum)",
}


def test_same_default_values(compose: dict[str, dict[str, Any]], renderings: dict[str, Rendering]) -> None:
    """The base runs with compose's defaults (a compose variable passed through unset is an empty
    ConfigMap value: the image's default applies on both sides), and so does the observability
    component in prod. Overlays then tune what they like."""
    differ = {}
    for name in COUNTERPARTS:
        rendering = _rendering_of(renderings, name)
        _, c = _container(rendering, name)
        env = rendering.env(c)
        for key, value in compose[name].get("environment", {}).items():
            want = "" if value is None else _expand(str(value))
            if env.get(key) != want and (name, key) not in K8S_OWN_VALUES:
                differ[f"{name} {key}"] = (want, env.get(key))
    assert differ == {}, "compose default vs Kubernetes value"
    for name, key in K8S_OWN_VALUES:
        rendering = _rendering_of(renderings, name)
        _, c = _container(rendering, name)
        assert rendering.env(c)[key] != _expand(str(compose[name]["environment"][key] or "")), (
            f"{key} no longer differs"
        )


def test_same_images(compose: dict[str, dict[str, Any]], renderings: dict[str, Rendering], overlay: Rendering) -> None:
    def repository(image: str) -> str:
        return image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image.split("@")[0]

    for name in COUNTERPARTS:
        want = _expand(compose[name]["image"])
        if name not in OBSERVABILITY:  # (the component is only in overlays, with their tags)
            _, base = _container(renderings["base"], name)
            assert base["image"] == want, f"{name}: base runs {base['image']}, compose {want}"
        if not _present(overlay, name):
            continue
        _, c = _container(overlay, name)
        # An overlay may move the wharf images to its registry and tag; the repository path stays.
        assert repository(c["image"]).endswith(repository(want)), f"{overlay.name} {name}: {c['image']}"
        if not want.startswith("wharf/"):  # the same tag; production adds its digest (test_images.py)
            assert c["image"].split("@")[0] == want


def test_same_commands(compose: dict[str, dict[str, Any]], overlay: Rendering) -> None:
    """Compose's `entrypoint` is Kubernetes' `command` and compose's `command` is `args` (both
    replace the image's ENTRYPOINT and CMD respectively): a Kubernetes `command` where compose only
    sets `command` would skip the image's entrypoint (redis:8's umask and modules, for one)."""
    for name in COUNTERPARTS:
        if not _present(overlay, name):
            continue
        service = compose[name]
        _, c = _container(overlay, name)
        if name in COMPOSE_ONLY_ENTRYPOINTS:
            # Kubernetes runs the image's entrypoint; compose puts its own in front of it.
            assert c.get("command") is None, f"{name}: the image's own entrypoint should run"
            assert c.get("args") == _k8s_args(service["command"]) + K8S_ONLY_ARGS.get(name, []), name
            continue
        assert c.get("command") == service.get("entrypoint"), f"{name}: entrypoints differ"
        assert c.get("args") == service.get("command"), f"{name}: commands differ"


def _k8s_args(command: list[str]) -> list[str]:
    """Compose's ``${NAME:-default}`` as Kubernetes' ``$(NAME)`` (the container's variable)."""
    return [re.sub(r"\$\{([A-Z0-9_]+):-[^}]*\}", r"$(\1)", arg) for arg in command]


def _compose_secret_files(service: dict[str, Any]) -> set[str]:
    """Files and directories (trailing /) each container sees under /run/secrets in compose."""
    everything = [*devsecrets.PASSWORDS, devsecrets.REDIS_ACL, devsecrets.TLS_CERT, devsecrets.TLS_KEY]
    out: set[str] = set()
    for secret in service.get("secrets", []):
        if secret in BUILD_ONLY_SECRETS:
            continue
        if secret in SECRET_DIRECTORIES:
            out.add(f"{SECRETS_ROOT / secret}/")
            continue
        out |= {str(SECRETS_ROOT / p) for p in everything if p.startswith(f"{secret}/")}
        if devsecrets.SIGNING_KEYS_DIR.startswith(f"{secret}/"):
            out.add(f"{SECRETS_ROOT / devsecrets.SIGNING_KEYS_DIR}/")
    return out


def test_same_secret_files(compose: dict[str, dict[str, Any]], overlay: Rendering) -> None:
    for name in COUNTERPARTS:
        if not _present(overlay, name):
            continue
        workload, c = _container(overlay, name)
        want = _compose_secret_files(compose[name]) - K8S_WITHHELD_SECRETS.get(name, set())
        assert workload.secret_files(c) == want, name


def test_same_replicas_and_grace_by_default(
    compose: dict[str, dict[str, Any]], renderings: dict[str, Rendering]
) -> None:
    base = renderings["base"]
    for name in ("api", "auth"):
        replicas = int(_expand(str(compose[name]["deploy"]["replicas"])))
        assert base.get("Deployment", name)["spec"]["replicas"] == replicas
        grace = int(compose[name]["stop_grace_period"].rstrip("s"))
        assert base.workload(name).pod["terminationGracePeriodSeconds"] >= grace


def test_backup_containers_read_the_compose_backup_settings(
    compose: dict[str, dict[str, Any]], overlay: Rendering
) -> None:
    """Every container that runs wharf-backup reads the settings compose gives its own (the
    backup-restore one-shot's: x-backup-env), from the ConfigMap wharf-backup, with the same secrets."""
    if not overlay.has("StatefulSet", "postgres"):
        return
    want = _compose_env(compose["backup-restore"]) - {"TZ"}  # the images' clock is UTC anyway
    for workload_name, container_name in K8S_ONLY_CONTAINERS:
        workload = overlay.workload(workload_name)
        c = workload.container(container_name)
        assert want <= set(overlay.env(c)), f"{workload_name}/{container_name}"
        assert workload.secret_files(c) == {"/run/secrets/backup/"}, f"{workload_name}/{container_name}"


def test_liveness_probes_check_as_often_as_the_compose_health_checks(
    compose: dict[str, dict[str, Any]], renderings: dict[str, Rendering]
) -> None:
    """One interval per service, chosen for what it guards (docs/operations.md, "Health checks"): the
    compose health check and the Kubernetes liveness probe alike, and the same command where both
    exec one. Start-up is Kubernetes' startupProbe's, checked often."""
    base = renderings["base"]
    services = ("postgres", "redis", "auth", "auth-mail", "api", "nginx")
    containers = {name: _container(base, name)[1] for name in services}
    # The backup metrics server: compose's backup service runs it beside the schedules.
    containers["backup"] = base.workload("backup-metrics").container("backup-metrics")
    for name, container in containers.items():
        check = compose[name]["healthcheck"]
        probe = container["livenessProbe"]
        assert probe["periodSeconds"] == int(check["interval"].removesuffix("s")), name
        assert probe["failureThreshold"] == check["retries"], name
        if "exec" in probe and "test" in check:
            assert ["CMD", *probe["exec"]["command"]] == check["test"], name
