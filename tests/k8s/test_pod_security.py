"""Every pod meets the `restricted` Pod Security Standard (as Pod Security Admission checks it), plus
Wharf's extras: read-only root filesystem, no service-account token, resources, probes, graceful stop.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import yaml

from .conftest import COMPOSE_FILE, NGINX, ROOT, cpu_millis, nginx_effective_settings, quantity_bytes

if TYPE_CHECKING:
    from .conftest import Rendering, Workload

# PSS `restricted`: the volume types a pod may use.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# PSS baseline: the only sysctls a pod may set.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(workload: Workload) -> list[str]:
    """The checks of PSA's baseline and restricted policies, over one pod template."""
    pod = workload.pod
    psc = pod.get("securityContext", {})
    errors: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            errors.append(f"{field} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            errors.append(f"volume {volume['name']} is {kinds - RESTRICTED_VOLUME_TYPES}")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            errors.append(f"unsafe sysctl {sysctl['name']}")
    if psc.get("runAsUser") == 0:
        errors.append("pod runAsUser 0")
    if psc.get("windowsOptions", {}).get("hostProcess"):
        errors.append("pod hostProcess")
    pod_seccomp = psc.get("seccompProfile", {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        errors.append(f"pod seccomp {pod_seccomp}")
    pod_se = psc.get("seLinuxOptions", {})
    if pod_se.get("type", "") not in SELINUX_TYPES or pod_se.get("user") or pod_se.get("role"):
        errors.append("pod seLinuxOptions")
    if psc.get("appArmorProfile", {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
        errors.append("pod appArmorProfile")
    annotations = workload.template["metadata"].get("annotations", {})
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            errors.append(f"annotation {key}={value}")

    for c in workload.containers() + pod.get("ephemeralContainers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            errors.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            errors.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            errors.append(f"{where}: adds capabilities {caps['add']}")
        if sc.get("procMount", "Default") != "Default":
            errors.append(f"{where}: procMount")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            errors.append(f"{where}: hostProcess")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                errors.append(f"{where}: hostPort {port['hostPort']}")
        # runAsNonRoot: true on the pod or on the container, and false nowhere.
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            errors.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            errors.append(f"{where}: runAsUser 0")
        seccomp = sc.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            errors.append(f"{where}: seccompProfile is {seccomp}")
        se = sc.get("seLinuxOptions", {})
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            errors.append(f"{where}: seLinuxOptions")
        if sc.get("appArmorProfile", {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            errors.append(f"{where}: appArmorProfile")
    return errors


def test_the_namespace_enforces_restricted(overlay: Rendering) -> None:
    (namespace,) = overlay.of_kind("Namespace")
    assert namespace["metadata"]["name"] == "wharf"
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    everything_namespaced = {d["metadata"].get("namespace") for d in overlay.docs if d["kind"] != "Namespace"}
    assert everything_namespaced == {"wharf"}


def test_every_pod_meets_restricted(overlay: Rendering) -> None:
    assert {w.name for w in overlay.workloads} >= {"api", "auth", "nginx", "redis", "db-init"}
    assert {w.name: restricted_violations(w) for w in overlay.workloads} == {w.name: [] for w in overlay.workloads}


def test_the_restricted_check_catches_violations(renderings: dict[str, Rendering]) -> None:
    """Guards the guard: a root, privileged, hostPath pod is reported on every count."""
    from .conftest import Workload

    api = renderings["prod"].get("Deployment", "api")
    pod = {
        "securityContext": {"runAsUser": 0},
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}],
    }
    bad = Workload("Deployment", "bad", {**api, "spec": {**api["spec"], "template": {"metadata": {}, "spec": pod}}})
    found = " ".join(restricted_violations(bad))
    for expected in ("hostNetwork", "hostPath", "runAsUser 0", "privileged", "allowPrivilegeEscalation", "ALL"):
        assert expected in found
    assert "SYS_ADMIN" in found
    assert "runAsNonRoot" in found
    assert "seccompProfile" in found


# The Dockerfile of each image Wharf builds (its USER is the uid the pods must run as).
WHARF_DOCKERFILES = {
    "wharf/api": ROOT / "services/Dockerfile",
    "wharf/auth": ROOT / "services/Dockerfile",
    "wharf/nginx": ROOT / "deploy/nginx/Dockerfile",
    "wharf/prometheus": ROOT / "deploy/prometheus/Dockerfile",
    "wharf/alertmanager": ROOT / "deploy/alertmanager/Dockerfile",
}


def _image_user(image: str) -> tuple[int, int] | None:
    """``USER uid:gid`` of a Wharf image's final stage (None for images Wharf does not build)."""
    for name, dockerfile in WHARF_DOCKERFILES.items():
        if image.split("@")[0].rsplit(":", 1)[0].endswith(name):
            users = re.findall(r"^USER (\d+):(\d+)$", dockerfile.read_text(), re.MULTILINE)
            assert users, f"{dockerfile} has no numeric USER uid:gid"
            return int(users[-1][0]), int(users[-1][1])
    return None


def test_every_container_runs_as_an_explicit_user_with_the_runtime_default_seccomp(overlay: Rendering) -> None:
    """What the issue spells out beyond PSS's minimum: a numeric runAsUser (PSS only forbids 0) and
    seccomp RuntimeDefault (PSS would accept Localhost too), and for Wharf's own images the very
    user the image is built for, so file ownership in the image and the pod agree."""
    for w in overlay.workloads:
        psc = w.pod.get("securityContext", {})
        for c in w.containers():
            sc, where = c.get("securityContext", {}), f"{overlay.name} {w.name}/{c['name']}"
            uid, gid = sc.get("runAsUser", psc.get("runAsUser")), sc.get("runAsGroup", psc.get("runAsGroup"))
            assert isinstance(uid, int), f"{where}: no numeric runAsUser"
            assert isinstance(gid, int), f"{where}: no numeric runAsGroup"
            assert uid > 0, f"{where}: runAsUser {uid}"
            assert gid > 0, f"{where}: runAsGroup {gid}"
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
            assert seccomp == {"type": "RuntimeDefault"}, f"{where}: seccompProfile {seccomp}"
            built_for = _image_user(c["image"])
            if built_for is not None:
                assert (uid, gid) == built_for, f"{where}: runs as {uid}:{gid}, {c['image']} is built for {built_for}"


def test_root_filesystems_are_read_only_with_scratch_in_an_emptydir(overlay: Rendering) -> None:
    for w in overlay.workloads:
        volumes = {v["name"]: v for v in w.pod.get("volumes", [])}
        for claim in w.obj["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"persistentVolumeClaim": claim["spec"]}
        for c in w.containers():
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, f"{w.name}/{c['name']}"
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, f"{w.name}/{c['name']}: no /tmp"
            assert "emptyDir" in volumes[tmp[0]["name"]], f"{w.name}/{c['name']}: /tmp is not an emptyDir"
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{w.name}/{c['name']}: mounts unknown volume {mount['name']}"
                source = volumes[mount["name"]]
                if "secret" in source or "configMap" in source:
                    assert mount.get("readOnly") is True, f"{w.name}/{c['name']}: {mount['mountPath']} writable"


def test_no_pod_gets_a_service_account_token_and_each_has_its_own_account(overlay: Rendering) -> None:
    accounts = {d["metadata"]["name"]: d for d in overlay.of_kind("ServiceAccount")}
    used = []
    for w in overlay.workloads:
        assert w.pod.get("automountServiceAccountToken") is False, w.name
        # Docker-link variables (NGINX_PORT=tcp://..., REDIS_PORT=...) would collide with Wharf's names.
        assert w.pod.get("enableServiceLinks") is False, w.name
        name = w.pod.get("serviceAccountName")
        assert name in accounts, f"{w.name}: service account {name!r} is not defined"
        assert accounts[name].get("automountServiceAccountToken") is False
        used.append(name)
    assert len(used) == len(set(used)), "a service account is shared between workloads"
    assert not overlay.of_kind("Role"), "nothing needs the Kubernetes API"
    assert not overlay.of_kind("RoleBinding")


def test_every_container_has_requests_and_limits_with_memory_limit_equal_to_request(overlay: Rendering) -> None:
    for w in overlay.workloads:
        for c in w.containers():
            where = f"{overlay.name} {w.name}/{c['name']}"
            resources = c.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            assert {"cpu", "memory"} <= set(requests), where
            assert {"cpu", "memory"} <= set(limits), where
            assert quantity_bytes(limits["memory"]) == quantity_bytes(requests["memory"]), where
            assert cpu_millis(limits["cpu"]) >= cpu_millis(requests["cpu"]) > 0, where


def test_every_long_running_container_has_startup_liveness_and_readiness_probes(overlay: Rendering) -> None:
    for w in overlay.workloads:
        if w.kind in ("Job", "CronJob"):
            continue
        for c in w.pod["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{overlay.name} {w.name}/{c['name']}: no {probe}"


def _gunicorn_graceful_default() -> int:
    source = (ROOT / "libs/wharf-common/src/wharf_common/gunicorn_conf.py").read_text()
    match = re.search(r"^graceful_timeout = (\d+)$", source, re.MULTILINE)
    assert match, "gunicorn_conf.py no longer sets graceful_timeout as this test expects"
    return int(match[1])


def _prestop_seconds(container: dict[str, Any]) -> int:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


def _compose_default(service: str, name: str) -> str:
    value = yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["environment"][name]
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def _nginx_seconds(value: str) -> int:
    """An nginx time (``25s``, ``1m``, ``500ms``, ``30``) in whole seconds, rounded up."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, f"not an nginx time: {value!r}"
    factor = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match[2]]
    return math.ceil(int(match[1]) * factor)


def test_termination_grace_covers_prestop_plus_gunicorn_graceful_timeout(overlay: Rendering) -> None:
    """A stopping pod first sleeps (preStop: endpoints and nginx stop sending), then gets SIGTERM;
    gunicorn lets in-flight requests finish for its graceful timeout, and its master then stops
    the metrics server (up to 5 s, gunicorn_conf.on_exit). All of it within the grace period."""
    for name in ("api", "auth"):
        w = overlay.workload(name)
        (c,) = w.pod["containers"]
        graceful = _gunicorn_graceful_default()  # a constant: compose and k8s drain as long
        grace = w.pod["terminationGracePeriodSeconds"]
        assert grace >= _prestop_seconds(c) + graceful + 5, f"{name}: {grace} s is too short"
        assert 3 <= _prestop_seconds(c) <= 15
    # nginx: preStop, then the image's STOPSIGNAL (SIGQUIT), a graceful stop that waits for the
    # requests in flight, each bounded by connecting to and then waiting for an upstream.
    nginx = overlay.workload("nginx")
    (c,) = nginx.pod["containers"]
    effective = nginx_effective_settings(overlay.env(c))
    (connect,) = re.findall(
        r"^proxy_connect_timeout (\S+);", (NGINX / "templates/snippets/proxy.conf.template").read_text(), re.MULTILINE
    )
    longest = _nginx_seconds(connect) + _nginx_seconds(effective["NGINX_PROXY_READ_TIMEOUT"])
    assert re.search(r"^STOPSIGNAL SIGQUIT$", (NGINX / "Dockerfile").read_text(), re.MULTILINE)
    assert nginx.pod["terminationGracePeriodSeconds"] >= _prestop_seconds(c) + longest, "nginx is cut off"
    assert 3 <= _prestop_seconds(c) <= 15


def test_deployments_roll_without_losing_capacity_and_spread_over_nodes(overlay: Rendering) -> None:
    for name in ("api", "auth", "nginx"):
        d = overlay.get("Deployment", name)
        strategy = d["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = {s["topologyKey"] for s in spread}
        assert "kubernetes.io/hostname" in keys
        for s in spread:
            assert s["labelSelector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
