"""nginx's status on the internal network only, and the `observability` profile's Prometheus
scraping every replica of api and auth and, through the exporter, nginx."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from .conftest import Stack, sign_in, wait_healthy

pytestmark = pytest.mark.integration

PROFILE = ("--profile", "observability")
STATUS_URL = "http://nginx:9000/stub_status"


def test_nginx_status_is_served_to_the_internal_network(stack: Stack, http: requests.Session) -> None:
    http.get(stack.base_url + "/healthz", timeout=5)
    api = stack.container_id("api")  # a neighbour on the internal `backend` network
    status, body = stack.get_inside(api, STATUS_URL)
    assert status == 200
    assert body.startswith("Active connections:"), body
    assert "server accepts handled requests" in body
    status, body = stack.get_inside(api, "http://nginx:9000/api/users")  # nothing else is served there
    assert status == 404
    assert '"status":404' in body


def test_nginx_status_is_neither_published_nor_routed_publicly(stack: Stack, http: requests.Session) -> None:
    ports = subprocess.run(
        ["docker", "port", stack.container_id("nginx")], capture_output=True, text=True, check=True
    ).stdout
    published = {line.split(" -> ")[0] for line in ports.splitlines() if line.strip()}
    assert published == {"8080/tcp", "8443/tcp"}, ports
    certificate = stack.secrets_dir / "nginx" / "tls.crt"  # the dev certificate names 127.0.0.1
    for base in (stack.base_url, stack.https_url):
        for path in ("/stub_status", "/nginx_status", "/status", "/api/stub_status", "/auth/../stub_status"):
            response = http.get(base + path, timeout=5, verify=certificate)
            assert response.status_code == 404, (base, path, response.text)
            assert "Active connections" not in response.text
            assert response.headers["Content-Type"] == "application/problem+json"


def _targets(stack: Stack) -> list[dict[str, object]]:
    response = requests.get(f"{stack.prometheus_url}/api/v1/targets", params={"state": "active"}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["activeTargets"]


def _query(stack: Stack, expression: str) -> list[dict[str, object]]:
    response = requests.get(f"{stack.prometheus_url}/api/v1/query", params={"query": expression}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[Stack]:
    """The profile's services started beside the running stack; removed again, with their data."""
    result = stack.compose(*PROFILE, "up", "-d", "--wait", "--wait-timeout", "120", "prometheus", check=False)
    try:
        assert result.returncode == 0, result.stderr
        yield stack
    finally:
        stack.compose(*PROFILE, "rm", "--stop", "--force", "--volumes", "prometheus", "nginx-exporter", check=False)
        subprocess.run(["docker", "volume", "rm", f"{stack.project}_promdata"], capture_output=True, check=False)


def test_prometheus_scrapes_every_replica_and_nginx(prometheus: Stack, http: requests.Session) -> None:
    stack = prometheus
    headers = sign_in(stack, http)
    assert http.get(f"{stack.base_url}/api/users?limit=1", headers=headers, timeout=10).status_code == 200
    replicas = {service: len(stack.compose("ps", "-q", service).stdout.split()) for service in ("api", "auth")}
    want = Counter({"api": replicas["api"], "auth": replicas["auth"], "nginx": 1, "prometheus": 1})

    deadline = time.monotonic() + 90  # discovery, then one scrape interval (15 s)
    while True:
        targets = _targets(stack)
        up = Counter(str(t["labels"]["job"]) for t in targets if t["health"] == "up")  # type: ignore[index]
        if up == want or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert up == want, [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
    # One target per replica, found through Docker's DNS, each scraped on its own address.
    for job in ("api", "auth"):
        addresses = {t["labels"]["instance"] for t in targets if t["labels"]["job"] == job}  # type: ignore[index]
        assert len(addresses) == replicas[job]

    deadline = time.monotonic() + 60
    while True:
        served = _query(stack, 'sum by (job) (wharf_http_request_duration_seconds_count{route="/users"})')
        nginx_up = _query(stack, "nginx_up")
        if (served and nginx_up) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {r["metric"]["job"] for r in served} == {"api"}  # type: ignore[index]
    assert float(served[0]["value"][1]) >= 1  # type: ignore[index]
    assert [r["value"][1] for r in nginx_up] == ["1"]  # type: ignore[index]
    assert _query(stack, "nginx_http_requests_total > 0")
    with_wharf_metrics = _query(stack, 'count by (job) ({__name__=~"wharf_.+"})')
    assert {r["metric"]["job"] for r in with_wharf_metrics} == {"api", "auth"}  # type: ignore[index]


def test_profile_runs_healthy_non_root_and_publishes_on_loopback_only(prometheus: Stack) -> None:
    stack = prometheus
    containers = {c["Service"]: c for c in stack.containers() if c["Service"] in {"prometheus", "nginx-exporter"}}
    assert containers["prometheus"]["State"] == "running"
    wait_healthy(str(containers["prometheus"]["ID"]), timeout=0)  # its own check passes (Docker's may come later)
    assert containers["nginx-exporter"]["State"] == "running"
    for container in containers.values():
        processes = subprocess.run(
            ["docker", "top", str(container["ID"]), "-o", "pid,uid"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[1:]
        assert processes
        assert {line.split()[1] for line in processes} == {"65534"}, processes  # nobody
    publishers = containers["prometheus"]["Publishers"]
    assert {p["URL"] for p in publishers if p["PublishedPort"]} == {"127.0.0.1"}  # type: ignore[index, union-attr]
    assert not [p for p in containers["nginx-exporter"]["Publishers"] or [] if p["PublishedPort"]]  # type: ignore[union-attr]
