"""A workload's pod spec -> the plans of its containers, as a kubelet would run them on Docker.

Pure: nothing here talks to Docker, so every rule is tested offline (tests/kubeplay/test_translate.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from .manifests import ManifestError, Manifests, Obj, container_env, expand, object_name, quantity

PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
ALWAYS_READ_ONLY = ("secret", "configMap")  # the kubelet mounts these read-only whatever the spec says
DEFAULT_MODE = 0o644
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3}


@dataclass(frozen=True)
class Volume:
    """A pod volume: files to write (Secret, ConfigMap), an empty directory, or a claim's data."""

    name: str
    kind: str  # secret | configMap | emptyDir | memory | claim
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> (content, mode)
    claim: str = ""  # the claim's name, for kind "claim"
    size: int | None = None  # bytes, for kind "memory"


@dataclass(frozen=True)
class VolumeMount:
    volume: str
    path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class Probe:
    kind: str  # startupProbe | livenessProbe | readinessProbe
    action: str  # httpGet | tcpSocket | exec
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    failure_threshold: int = 3
    success_threshold: int = 1

    def describe(self) -> str:
        if self.action == "httpGet":
            return f"{self.kind} httpGet port {self.port} {self.path}"
        if self.action == "tcpSocket":
            return f"{self.kind} tcpSocket port {self.port}"
        return f"{self.kind} exec {' '.join(self.command)}"


@dataclass(frozen=True)
class Container:
    """What Docker needs to create one container of a pod."""

    name: str
    image: str
    entrypoint: list[str] | None  # Kubernetes `command`: replaces the image's ENTRYPOINT (and CMD)
    args: list[str] | None  # Kubernetes `args`: replaces the image's CMD
    env: dict[str, str]
    user: str | None
    group_add: list[str]
    read_only: bool
    cap_add: list[str]
    cap_drop: list[str]
    security_opt: list[str]
    privileged: bool
    mem_limit: int | None
    nano_cpus: int | None
    mounts: list[VolumeMount]
    ports: dict[str, int]  # name (or the number as text) -> containerPort
    probes: list[Probe]
    pre_stop: list[str] | None
    working_dir: str | None


@dataclass(frozen=True)
class Pod:
    owner: str  # the workload, "Deployment/api"
    name: str
    labels: dict[str, str]
    volumes: dict[str, Volume]
    init_containers: list[Container]
    container: Container
    restart_policy: str  # Always | OnFailure | Never
    grace_seconds: float
    subdomain: str = ""  # a StatefulSet pod's Service: <pod>.<subdomain> resolves to it
    fs_group: int | None = None
    backoff_limit: int | None = None  # a Job's: how many failed pods it replaces


ImageUser = Callable[[str], str]  # image -> its USER ("" when root)


def pods_of(manifests: Manifests, workload: Obj, *, images: dict[str, str], image_user: ImageUser) -> list[Pod]:
    """The pods ``workload`` asks for, in start order."""
    owner = object_name(workload)
    spec = workload["spec"]
    template = spec["template"]
    kind, name = workload["kind"], workload["metadata"]["name"]
    if kind == "Job":
        names = [f"{name}-{_hash(template)[:5]}"]
    elif kind == "StatefulSet":
        names = [f"{name}-{ordinal}" for ordinal in range(spec.get("replicas", 1))]
    else:
        names = [f"{name}-{_hash(template)[:10]}-{i}" for i in range(spec.get("replicas", 1))]
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    return [
        pod_of(
            manifests,
            owner,
            pod_name,
            template,
            images=images,
            image_user=image_user,
            claims={claim: f"{claim}-{pod_name}" for claim in claims},
            subdomain=spec.get("serviceName", "") if kind == "StatefulSet" else "",
            default_restart="Never" if kind == "Job" else "Always",
            backoff_limit=spec.get("backoffLimit", 6) if kind == "Job" else None,
        )
        for pod_name in names
    ]


def pod_of(
    manifests: Manifests,
    owner: str,
    pod_name: str,
    template: Obj,
    *,
    images: dict[str, str],
    image_user: ImageUser,
    claims: dict[str, str],
    subdomain: str,
    default_restart: str,
    backoff_limit: int | None = None,
) -> Pod:
    pod = template["spec"]
    volumes = {v["name"]: _volume(manifests, v, owner=owner, pod=pod) for v in pod.get("volumes", [])}
    volumes |= {name: Volume(name, "claim", claim=claim) for name, claim in claims.items()}
    if len(pod["containers"]) != 1:
        raise ManifestError(f"{owner}: {len(pod['containers'])} containers in one pod (sidecars) are not emulated")

    def one(spec: Obj, *, init: bool) -> Container:
        where = f"{owner} {'init container' if init else 'container'} {spec['name']}"
        return _container(manifests, spec, pod, volumes, where=where, pod_name=pod_name, images=images, user=image_user)

    return Pod(
        owner=owner,
        name=pod_name,
        labels=template["metadata"].get("labels", {}),
        volumes=volumes,
        init_containers=[one(c, init=True) for c in pod.get("initContainers", [])],
        container=one(pod["containers"][0], init=False),
        restart_policy=pod.get("restartPolicy", default_restart),
        grace_seconds=pod.get("terminationGracePeriodSeconds", 30),
        subdomain=subdomain,
        fs_group=_fs_group(pod),
        backoff_limit=backoff_limit,
    )


def _hash(obj: Obj) -> str:
    return sha256(repr(obj).encode()).hexdigest()


def _volume(manifests: Manifests, spec: Obj, *, owner: str, pod: Obj) -> Volume:
    name = spec["name"]
    for kind, name_key in (("secret", "secretName"), ("configMap", "name")):
        if kind in spec:
            source = spec[kind]
            object_kind = "Secret" if kind == "secret" else "ConfigMap"
            data = manifests.data(object_kind, source[name_key], optional=source.get("optional", False), owner=owner)
            return Volume(name, kind, files=_files(data or {}, source, owner=owner, fs_group=_fs_group(pod)))
    if "emptyDir" in spec:
        empty = spec["emptyDir"] or {}
        if empty.get("medium") == "Memory":
            limit = empty.get("sizeLimit")
            return Volume(name, "memory", size=int(quantity(limit)) if limit else None)
        return Volume(name, "emptyDir")
    if "persistentVolumeClaim" in spec:
        return Volume(name, "claim", claim=spec["persistentVolumeClaim"]["claimName"])
    raise ManifestError(f"{owner}: volume {name!r}: only secret, configMap, emptyDir and claims are emulated")


def _fs_group(pod: Obj) -> int | None:
    return (pod.get("securityContext") or {}).get("fsGroup")


def _files(data: dict[str, bytes], source: Obj, *, owner: str, fs_group: int | None) -> dict[str, tuple[bytes, int]]:
    """The files of a Secret or ConfigMap volume: every key, or only ``items`` (key -> path, mode)."""
    default = source.get("defaultMode", DEFAULT_MODE)
    items = source.get("items") or [{"key": key, "path": key} for key in sorted(data)]
    files = {}
    for item in items:
        if item["key"] not in data:
            raise ManifestError(f"{owner}: key {item['key']!r} is not in {source.get('secretName') or source['name']}")
        mode = item.get("mode", default)
        # With an fsGroup the kubelet makes the files group-readable (the group is fsGroup).
        files[item["path"]] = (data[item["key"]], mode | 0o440 if fs_group is not None else mode)
    return files


def _container(
    manifests: Manifests,
    spec: Obj,
    pod: Obj,
    volumes: dict[str, Volume],
    *,
    where: str,
    pod_name: str,
    images: dict[str, str],
    user: ImageUser,
) -> Container:
    env = container_env(manifests, spec, owner=where, pod_name=pod_name)
    image = images.get(spec["image"], spec["image"])
    security = {**(pod.get("securityContext") or {}), **(spec.get("securityContext") or {})}
    pod_security = pod.get("securityContext") or {}
    capabilities = security.get("capabilities") or {}
    limits = (spec.get("resources") or {}).get("limits") or {}
    ports = {str(p["containerPort"]): p["containerPort"] for p in spec.get("ports", [])}
    ports |= {p["name"]: p["containerPort"] for p in spec.get("ports", []) if "name" in p}
    groups = [
        *pod_security.get("supplementalGroups", []),
        *([pod_security["fsGroup"]] if "fsGroup" in pod_security else []),
    ]
    return Container(
        name=spec["name"],
        image=image,
        entrypoint=[expand(a, env) for a in spec["command"]] if "command" in spec else None,
        args=[expand(a, env) for a in spec["args"]] if "args" in spec else None,
        env=env,
        user=_user(security, image, user, where=where),
        group_add=[str(g) for g in groups],
        read_only=bool(security.get("readOnlyRootFilesystem")),
        cap_add=[f"CAP_{c}" if c != "ALL" else c for c in capabilities.get("add", [])],
        cap_drop=[f"CAP_{c}" if c != "ALL" else c for c in capabilities.get("drop", [])],
        security_opt=_security_opt(security, where=where),
        privileged=bool(security.get("privileged")),
        mem_limit=int(quantity(limits["memory"])) if "memory" in limits else None,
        nano_cpus=int(quantity(limits["cpu"]) * 10**9) if "cpu" in limits else None,
        mounts=[_mount(m, volumes, where=where) for m in spec.get("volumeMounts", [])],
        ports=ports,
        probes=[_probe(kind, spec[kind], ports, where=where) for kind in PROBES if kind in spec],
        pre_stop=((spec.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command"),
        working_dir=spec.get("workingDir"),
    )


def _user(security: Obj, image: str, image_user: ImageUser, *, where: str) -> str | None:
    """Docker's --user, after the kubelet's runAsNonRoot check."""
    uid, gid = security.get("runAsUser"), security.get("runAsGroup")
    if security.get("runAsNonRoot") and uid is None:
        declared = image_user(image).split(":")[0]
        if not declared.isdigit():
            # The kubelet's own words for both cases.
            problem = f"image has non-numeric user ({declared})" if declared else "image will run as root"
            raise ManifestError(f"{where}: container has runAsNonRoot and {problem}")
        uid = int(declared)
    if security.get("runAsNonRoot") and uid == 0:
        raise ManifestError(f"{where}: container's runAsUser breaks non-root policy (runAsNonRoot and runAsUser 0)")
    if uid is None:  # the image's user, with runAsGroup's group when one is set
        return f"{image_user(image).split(':')[0] or 0}:{gid}" if gid is not None else None
    return f"{uid}:{gid}" if gid is not None else str(uid)


def _security_opt(security: Obj, *, where: str) -> list[str]:
    options = []
    if security.get("allowPrivilegeEscalation") is False:
        options.append("no-new-privileges:true")
    seccomp = (security.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        options.append("seccomp=unconfined")
    elif seccomp != "RuntimeDefault":
        raise ManifestError(f"{where}: seccompProfile {seccomp} is not emulated (RuntimeDefault, Unconfined are)")
    return options


def _mount(spec: Obj, volumes: dict[str, Volume], *, where: str) -> VolumeMount:
    volume = volumes.get(spec["name"])
    if volume is None:
        raise ManifestError(f"{where}: volumeMount {spec['name']!r} names no volume of the pod")
    read_only = spec.get("readOnly", False) or volume.kind in ALWAYS_READ_ONLY
    return VolumeMount(spec["name"], spec["mountPath"], spec.get("subPath", ""), read_only)


def _probe(kind: str, spec: Obj, ports: dict[str, int], *, where: str) -> Probe:
    settings: dict[str, Any] = {**PROBE_DEFAULTS, **spec}
    timing = {
        "initial_delay": settings["initialDelaySeconds"],
        "period": settings["periodSeconds"],
        "timeout": settings["timeoutSeconds"],
        "failure_threshold": settings["failureThreshold"],
        "success_threshold": settings.get("successThreshold", 1),
    }
    if "exec" in spec:
        return Probe(kind, "exec", command=tuple(spec["exec"]["command"]), **timing)
    action = "httpGet" if "httpGet" in spec else "tcpSocket" if "tcpSocket" in spec else ""
    if not action:
        raise ManifestError(f"{where}: {kind}: only httpGet, tcpSocket and exec probes are emulated")
    target = spec[action]
    port = ports.get(str(target["port"])) if isinstance(target["port"], str) else target["port"]
    if port is None:
        raise ManifestError(f"{where}: {kind} port {target['port']!r} is not a port of the container")
    if action == "tcpSocket":
        return Probe(kind, action, port=port, **timing)
    headers = tuple((h["name"], h["value"]) for h in target.get("httpHeaders", []))
    return Probe(
        kind, action, port=port, path=target.get("path", "/"), scheme=target.get("scheme", "HTTP"), headers=headers,
        **timing,
    )  # fmt: skip
