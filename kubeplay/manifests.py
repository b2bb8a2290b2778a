"""The objects of a rendered manifest set and the lookups a kubelet makes in them."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

Obj = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
# Kinds whose effect needs a cluster's control plane; they are read and reported, not emulated.
NOT_EMULATED = {
    "Namespace": "one Docker network per run stands for the namespace",
    "ServiceAccount": "no API server, so no identity (automountServiceAccountToken is ignored)",
    "NetworkPolicy": "not enforced: every pod can reach every other",
    "HorizontalPodAutoscaler": "replicas stay as the workload says",
    "PodDisruptionBudget": "nothing evicts pods",
    "Ingress": "no Ingress controller; reach a Service with --publish",
    "PersistentVolumeClaim": "claims become directories on the host",
}


class ManifestError(Exception):
    """A manifest that could not run; the message names the object."""


def object_name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@dataclass
class Manifests:
    configmaps: dict[str, Obj] = field(default_factory=dict)
    # A schedule needs a controller: a CronJob is kept and runs only when asked (job_from_cronjob).
    cronjobs: dict[str, Obj] = field(default_factory=dict)
    secrets: dict[str, Obj] = field(default_factory=dict)
    services: list[Obj] = field(default_factory=list)
    workloads: list[Obj] = field(default_factory=list)
    ignored: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    namespace: str = "default"

    @classmethod
    def load(cls, documents: Iterable[str]) -> Manifests:
        """Every object of the YAML ``documents`` (each may hold several, separated by ``---``)."""
        found = cls()
        for text in documents:
            for obj in yaml.safe_load_all(text):
                if obj:
                    found.add(obj)
        if not found.workloads:
            raise ManifestError("no Deployment, StatefulSet or Job in the manifests")
        return found

    def add(self, obj: Obj) -> None:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        if kind == "List":
            for item in obj.get("items", []):
                self.add(item)
            return
        if kind == "Namespace":
            self.namespace = name
        by_kind = {"ConfigMap": self.configmaps, "Secret": self.secrets}
        if kind in by_kind:
            by_kind[kind][name] = obj
        elif kind == "Service":
            self.services.append(obj)
        elif kind in WORKLOAD_KINDS:
            self.workloads.append(obj)
        elif kind == "CronJob":
            self.cronjobs[name] = obj
        elif kind in NOT_EMULATED:
            self.ignored.setdefault(kind, []).append(name)
        else:
            raise ManifestError(f"{kind}/{name}: kind {kind} is not supported by kubeplay")

    def job_from_cronjob(self, name: str) -> Obj:
        """A Job of CronJob ``name``'s template, as ``kubectl create job --from=cronjob/NAME`` makes."""
        cronjob = self.cronjobs.get(name)
        if cronjob is None:
            raise ManifestError(f"CronJob/{name} not found")
        template = cronjob["spec"]["jobTemplate"]
        metadata = {**template.get("metadata", {}), "name": f"{name}-manual"}
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": template["spec"]}

    def data(self, kind: str, name: str, *, optional: bool = False, owner: str) -> dict[str, bytes] | None:
        """The keys of ConfigMap or Secret ``name`` as bytes; None when it is missing and optional."""
        source = (self.configmaps if kind == "ConfigMap" else self.secrets).get(name)
        if source is None:
            if optional:
                return None
            raise ManifestError(f"{owner}: {kind} {name!r} not found")
        values = {k: str(v).encode() for k, v in (source.get("data") or {}).items()} if kind == "ConfigMap" else {}
        values |= {k: base64.b64decode(v) for k, v in (source.get("binaryData") or {}).items()}
        if kind == "Secret":
            values |= {k: base64.b64decode(v) for k, v in (source.get("data") or {}).items()}
            values |= {k: str(v).encode() for k, v in (source.get("stringData") or {}).items()}
        return values


# --- environment -------------------------------------------------------------------------------

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# $(VAR) refers to a variable defined earlier; $$(VAR) is a literal $(VAR) (Kubernetes' rule).
REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """``text`` with $(VAR) references to ``env`` expanded; unknown references stay as written."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return REFERENCE.sub(one, text)


def container_env(manifests: Manifests, container: Obj, *, owner: str, pod_name: str) -> dict[str, str]:
    """The environment a kubelet gives ``container``: envFrom first, then env, in order."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
        )
        values = manifests.data(kind, ref["name"], optional=ref.get("optional", False), owner=owner) or {}
        prefix = source.get("prefix", "")
        env |= {prefix + k: v.decode() for k, v in values.items() if ENV_NAME.match(prefix + k)}
    for var in container.get("env", []):
        if "valueFrom" not in var:
            env[var["name"]] = expand(str(var.get("value", "")), env)
            continue
        value = _value_from(manifests, var["valueFrom"], owner=owner, pod_name=pod_name)
        if value is not None:
            env[var["name"]] = value
    return env


def _value_from(manifests: Manifests, source: Obj, *, owner: str, pod_name: str) -> str | None:
    for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
        if key in source:
            ref = source[key]
            optional = ref.get("optional", False)
            values = manifests.data(kind, ref["name"], optional=optional, owner=owner) or {}
            if ref["key"] not in values:
                if optional:
                    return None
                raise ManifestError(f"{owner}: {kind} {ref['name']!r} has no key {ref['key']!r}")
            return values[ref["key"]].decode()
    fields = {"metadata.name": pod_name, "metadata.namespace": manifests.namespace}
    if "fieldRef" in source and source["fieldRef"]["fieldPath"] in fields:
        return fields[source["fieldRef"]["fieldPath"]]
    raise ManifestError(f"{owner}: env valueFrom {source} is not emulated")


# --- quantities --------------------------------------------------------------------------------

SUFFIXES = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity ("500m", "256Mi", "2") as a number."""
    match = QUANTITY.match(str(value))
    if not match or match.group(2) not in SUFFIXES:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return Decimal(match.group(1)) * SUFFIXES[match.group(2)]
