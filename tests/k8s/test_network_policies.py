"""NetworkPolicies allow exactly the listed flows and nothing else.

A small evaluator of the NetworkPolicy semantics (a flow needs an egress allowance on the source
side and an ingress allowance on the destination side whenever policies select the pod) is run
over every pair of endpoints and every port they listen on, including pods that are not Wharf's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .conftest import Rendering

NS = "wharf"


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: outside the cluster
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[tuple[str | None, int, str], ...] = ()  # (name, number, protocol)
    ip: str = "10.0.0.1"


NAMESPACE_LABELS = {
    NS: {"kubernetes.io/metadata.name": NS},
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
    "other": {"kubernetes.io/metadata.name": "other"},
}
# Endpoints that are not Wharf workloads.
OUTSIDERS = (
    Endpoint(
        "internet",
        None,
        ports=((None, 443, "TCP"), (None, 5432, "TCP"), (None, 25, "TCP"), (None, 465, "TCP"), (None, 587, "TCP")),
        ip="203.0.113.7",
    ),
    Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, ((None, 53, "UDP"), (None, 53, "TCP"))),
    Endpoint("stranger", NS, {"app.kubernetes.io/name": "debug"}, ((None, 8080, "TCP"),)),
    Endpoint("other-ns-pod", "other", {"app.kubernetes.io/name": "api"}, ((None, 8000, "TCP"),)),
)

# (source, destination, port): everything that may connect. nginx is the public door (from
# anywhere, on its HTTP and HTTPS ports); the api -> auth flow is the JWKS fetch. A stray pod in the
# namespace ("stranger") reaches nothing: the default deny covers its egress too.
EXPECTED = {
    ("internet", "nginx", 8080),
    ("internet", "nginx", 8443),
    ("other-ns-pod", "nginx", 8080),
    ("other-ns-pod", "nginx", 8443),
    ("kube-dns", "nginx", 8080),
    ("kube-dns", "nginx", 8443),
    ("nginx", "api", 8000),
    ("nginx", "auth", 8000),
    ("api", "auth", 8000),
    ("api", "postgres", 5432),
    ("api", "redis", 6379),
    ("auth", "postgres", 5432),
    ("auth", "redis", 6379),
    ("db-init", "postgres", 5432),
    # auth's mail worker: its data, and SMTP servers outside
    ("auth-mail", "postgres", 5432),
    ("auth-mail", "redis", 6379),
    *(("auth-mail", "internet", port) for port in (25, 465, 587)),
    *((name, "kube-dns", 53) for name in ("nginx", "api", "auth", "auth-mail", "db-init")),
}
# With a managed database there is no postgres pod; its clients reach out of the cluster on 5432.
EXPECTED_MANAGED_DB = {f for f in EXPECTED if f[1] != "postgres"} | {
    (name, "internet", 5432) for name in ("api", "auth", "auth-mail", "db-init")
}
# The observability component (the prod overlays): Prometheus scrapes the metrics ports and sends
# to Alertmanager, which mails out; mail-metrics reads Redis. Nothing reaches Prometheus.
OBSERVABILITY = {
    ("prometheus", "api", 9000),
    ("prometheus", "auth", 9000),
    ("prometheus", "mail-metrics", 9000),
    ("prometheus", "alertmanager", 9093),
    ("mail-metrics", "redis", 6379),
    *(("alertmanager", "internet", port) for port in (25, 465, 587)),
    *((name, "kube-dns", 53) for name in ("prometheus", "alertmanager", "mail-metrics")),
}
# postgres-0's backup metrics, where there is a postgres-0 (not with a managed database).
BACKUP_METRICS = {("prometheus", "backup-metrics", 9000)}
EXPECTED_BY_OVERLAY = {
    "dev": EXPECTED,
    "prod": EXPECTED | OBSERVABILITY | BACKUP_METRICS,
    "prod-managed-db": EXPECTED_MANAGED_DB | OBSERVABILITY,
}


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    selector = selector or {}
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        ok = {
            "In": value in expr.get("values", []),
            "NotIn": value not in expr.get("values", []),
            "Exists": expr["key"] in labels,
            "DoesNotExist": expr["key"] not in labels,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        # Pod addresses are not matched here: an ipBlock is for what lies outside the cluster.
        if other.namespace is not None:
            return False
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], NAMESPACE_LABELS[other.namespace]):
            return False
    elif other.namespace != policy_ns:
        return False
    return _selects(peer.get("podSelector"), other.labels)


def _port_matches(rule_ports: list[dict[str, Any]] | None, target: Endpoint, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for rp in rule_ports:
        if rp.get("protocol", "TCP") != protocol:
            continue
        wanted = rp.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):  # a named port of the destination pod
            if any(n == wanted and p == port and pr == protocol for n, p, pr in target.ports):
                return True
        elif wanted <= port <= rp.get("endPort", wanted):
            return True
    return False


def _allowed(policies: list[dict[str, Any]], src: Endpoint, dst: Endpoint, port: int, protocol: str) -> bool:
    def direction(pod: Endpoint, peer: Endpoint, kind: str) -> bool:
        if pod.namespace != NS:
            return True  # not ours: nothing in this rendering restricts it
        selecting = [
            p
            for p in policies
            if kind in p["spec"].get("policyTypes", ["Ingress"]) and _selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not selecting:
            return True
        key, peers_key = ("egress", "to") if kind == "Egress" else ("ingress", "from")
        for policy in selecting:
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if peers and not any(_peer_matches(p, NS, peer) for p in peers):
                    continue
                if _port_matches(rule.get("ports"), dst, port, protocol):
                    return True
        return False

    return direction(src, dst, "Egress") and direction(dst, src, "Ingress")


def _endpoints(overlay: Rendering) -> list[Endpoint]:
    out = list(OUTSIDERS)
    for w in overlay.workloads:
        ports = tuple(
            (p.get("name"), p["containerPort"], p.get("protocol", "TCP"))
            for c in w.pod["containers"]
            for p in c.get("ports", [])
        )
        out.append(Endpoint(w.name, NS, w.labels, ports))
    return out


def allowed_flows(overlay: Rendering) -> set[tuple[str, str, int]]:
    policies = overlay.of_kind("NetworkPolicy")
    endpoints = _endpoints(overlay)
    return {
        (src.name, dst.name, port)
        for src in endpoints
        for dst in endpoints
        if src.name != dst.name and NS in (src.namespace, dst.namespace)  # flows this namespace governs
        for _, port, protocol in dst.ports
        if _allowed(policies, src, dst, port, protocol)
    }


def test_default_deny_covers_every_pod_in_both_directions(overlay: Rendering) -> None:
    deny = overlay.get("NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny


def test_network_policies_allow_exactly_the_listed_flows(overlay: Rendering) -> None:
    assert allowed_flows(overlay) == EXPECTED_BY_OVERLAY[overlay.name]


@pytest.mark.parametrize(
    ("src", "dst", "port"),
    [
        ("nginx", "postgres", 5432),
        ("nginx", "redis", 6379),
        ("stranger", "api", 8000),
        ("postgres", "internet", 443),
        ("nginx", "api", 9000),
        ("stranger", "prometheus", 9090),
        ("mail-metrics", "postgres", 5432),
    ],
)
def test_forbidden_flows_are_denied(renderings: dict[str, Rendering], src: str, dst: str, port: int) -> None:
    """A few flows spelled out, so a failure of the matrix above reads plainly."""
    assert (src, dst, port) not in allowed_flows(renderings["prod"])


def test_the_evaluator_sees_a_flow_when_the_policies_are_gone(renderings: dict[str, Rendering]) -> None:
    """Guards the guard: without NetworkPolicies everything may talk to everything."""
    from .conftest import Rendering

    prod = renderings["prod"]
    bare = Rendering("bare", [d for d in prod.docs if d["kind"] != "NetworkPolicy"])
    assert ("nginx", "postgres", 5432) in allowed_flows(bare)
    assert ("stranger", "redis", 6379) in allowed_flows(bare)
