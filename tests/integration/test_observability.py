"""nginx's status on the internal network only, and the `observability` profile: Prometheus
scraping every replica of api and auth, nginx (through its exporter), the mail queue, the volumes'
free space and the edge's probes, with its alert rules loaded; and alerts that reach a person: an
api replica stops, the rule fires, Alertmanager mails it to the development sink (what `make mail`
shows), the replica starts again and the resolution is mailed too.

The profile runs once for the module with the production configuration and rules at short
intervals and `for:` durations (alerting.compose.yaml) and Alertmanager with short grouping
settings: the same path, in seconds instead of minutes, without weakening the defaults."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from .conftest import ROOT, Stack, docker, run_make, sign_in, wait_healthy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(scratch_stack: Stack) -> Stack:
    """Here Prometheus's profile starts beside the services and an api replica is stopped until its
    alert is mailed: on the scratch stack, not the shared one."""
    return scratch_stack


PROFILE = ("--profile", "observability")
RULES = ROOT / "deploy/prometheus/rules"
# Every group of every rule file (not of their promtool tests), and the one the image's entrypoint writes.
RULE_GROUPS = {
    group["name"]
    for path in RULES.glob("*.yml")
    if not path.name.endswith(".test.yml")
    for group in yaml.safe_load(path.read_text())["groups"]
} | {"wharf-expected-replicas"}
STATUS_URL = "http://nginx:9000/stub_status"
FILES = ("-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "tests/integration/alerting.compose.yaml"))
PROFILE_SERVICES = (
    "prometheus",
    "alertmanager",
    "nginx-exporter",
    "mail-metrics",
    "node-exporter",
    "blackbox-exporter",
)
PROFILE_BUILT = ("prometheus", "alertmanager")  # the others run images that `make test` builds or base images
RECIPIENT = "oncall@example.com"
FAST = {  # seconds; the defaults are 15 s, 15 s, 10 s and each rule's own `for:`
    "scrape_interval": "2s",
    "evaluation_interval": "2s",
    "dns_refresh_interval": "2s",
    "for": "4s",
}
ALERTMANAGER_SETTINGS = {
    "ALERT_MAIL_TO": RECIPIENT,
    "ALERT_GROUP_WAIT": "1s",
    "ALERT_GROUP_INTERVAL": "2s",
    "ALERT_REPEAT_INTERVAL": "1h",
}


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


def fast_prometheus(directory: Path) -> None:
    """The production prometheus.yml and rules, with the short intervals and durations above."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": FAST["scrape_interval"], "scrape_timeout": "1s"}
    config["global"]["evaluation_interval"] = FAST["evaluation_interval"]
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        if "scrape_timeout" in job:  # a slow target (the backup metrics): as often as a scrape may take
            job["scrape_interval"] = job["scrape_timeout"]
        for sd in job.get("dns_sd_configs", []):
            sd["refresh_interval"] = FAST["dns_refresh_interval"]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = directory / "rules"
    rules.mkdir()
    for source in RULES.glob("*.yml"):
        if source.name.endswith(".test.yml"):
            continue
        document = yaml.safe_load(source.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = FAST["for"]
        (rules / source.name).write_text(yaml.safe_dump(document))


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The profile started beside the session's stack with the fast settings, its images built from
    the working tree (`make test` builds the default services only); removed afterwards."""
    directory = tmp_path_factory.mktemp("prometheus")
    fast_prometheus(directory)
    env = stack.env | ALERTMANAGER_SETTINGS | {"WHARF_TEST_PROMETHEUS_DIR": str(directory)}
    fast = dataclasses.replace(stack, env=env)
    try:
        # Only the profile's own images are built: a build of the services' images under this
        # project would label them anew (com.docker.compose.project), so `up` would recreate the
        # session's api, auth and nginx under the other tests.
        fast.compose(*FILES, *PROFILE, "build", "--quiet", *PROFILE_BUILT, timeout=900)
        serving = {service: stack.container_ids(service) for service in ("api", "auth", "nginx", "postgres", "backup")}
        result = fast.compose(
            *FILES, *PROFILE, "up", "-d", "--wait", "--wait-timeout", "180", "prometheus", check=False
        )
        assert result.returncode == 0, result.stderr
        assert {service: stack.container_ids(service) for service in serving} == serving, "the profile recreated them"
        yield fast
    finally:
        fast.compose(*FILES, *PROFILE, "rm", "--stop", "--force", "--volumes", *PROFILE_SERVICES, check=False)
        for volume in ("promdata", "alertdata"):
            docker("volume", "rm", f"{stack.project}_{volume}", check=False)


def test_prometheus_scrapes_every_replica_and_nginx(prometheus: Stack, http: requests.Session) -> None:
    stack = prometheus
    headers = sign_in(stack, http)
    assert http.get(f"{stack.base_url}/api/users?limit=1", headers=headers, timeout=10).status_code == 200
    replicas = {service: len(stack.compose("ps", "-q", service).stdout.split()) for service in ("api", "auth")}
    want = Counter({"api": replicas["api"], "auth": replicas["auth"], "nginx": 1, "prometheus": 1})
    # the mail queue, the volumes, three routes through the edge, its certificate, Alertmanager, backups
    want += Counter({"mail": 1, "node": 1, "edge": 3, "tls": 1, "alertmanager": 1, "backup": 1})

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
    assert {r["metric"]["job"] for r in with_wharf_metrics} == {"api", "auth", "mail", "backup"}  # type: ignore[index]


def test_what_the_alert_rules_need_is_there(prometheus: Stack) -> None:
    """Every rule group is loaded (and no promtool test file as one), and the series the rules read
    have values: replicas wanted, the mail queue, each data volume's free space, the certificate's
    expiry, the edge's probes."""
    stack = prometheus
    response = requests.get(f"{stack.prometheus_url}/api/v1/rules", timeout=5)
    response.raise_for_status()
    assert {g["name"] for g in response.json()["data"]["groups"]} == RULE_GROUPS
    replicas = {service: len(stack.compose("ps", "-q", service).stdout.split()) for service in ("api", "auth")}
    wanted = {job: float(count) for job, count in replicas.items()}

    deadline = time.monotonic() + 60  # recording rules are evaluated every few seconds after a start
    while True:
        expected = {r["metric"]["job"]: float(r["value"][1]) for r in _query(stack, "wharf:replicas:expected")}  # type: ignore[index]
        volumes = {r["metric"]["volume"] for r in _query(stack, "volume:wharf_free_ratio > 0")}  # type: ignore[index]
        expiry = _query(stack, "(wharf:tls_certificate_expiry_timestamp_seconds - time()) / 86400")
        probes = _query(stack, "probe_success == 1")
        queue = _query(stack, "wharf_mail_queue_up == 1 and on () wharf_mail_workers >= 1")
        if (expected == wanted and volumes and expiry and len(probes) == 4 and queue) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert expected == wanted
    assert volumes == {"pgdata", "redisdata", "promdata", "maildata", "alertdata", "pgbackrest"}
    # the development certificate: valid for a year, made again 30 days before it expires
    assert 29 < float(expiry[0]["value"][1]) <= 366  # type: ignore[index]
    assert len(probes) == 4, probes
    assert queue


def test_profile_runs_healthy_non_root_and_publishes_on_loopback_only(prometheus: Stack) -> None:
    stack = prometheus
    containers = {c["Service"]: c for c in stack.containers() if c["Service"] in PROFILE_SERVICES}
    assert set(containers) == set(PROFILE_SERVICES)
    assert {c["State"] for c in containers.values()} == {"running"}
    for name in ("prometheus", "alertmanager", "mail-metrics"):
        wait_healthy(str(containers[name]["ID"]), timeout=0)  # its own check passes (Docker's may come later)
    for container in containers.values():
        processes = subprocess.run(
            ["docker", "top", str(container["ID"]), "-o", "pid,uid"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[1:]
        assert processes
        assert {line.split()[1] for line in processes} <= {"65534", "10001"}, processes  # nobody, wharf
    publishers = containers["prometheus"]["Publishers"]
    assert {p["URL"] for p in publishers if p["PublishedPort"]} == {"127.0.0.1"}  # type: ignore[index, union-attr]
    for name, container in containers.items():
        if name != "prometheus":
            assert not [p for p in container["Publishers"] or [] if p["PublishedPort"]], name  # type: ignore[union-attr]


def sink(stack: Stack) -> list[dict[str, Any]]:
    out = stack.compose("exec", "-T", "mail-sink", "python", "/app/mailsink.py", "json", timeout=60).stdout
    return json.loads(out)


def alert_mails(stack: Stack, subject: str) -> list[dict[str, Any]]:
    return [m for m in sink(stack) if m["subject"].startswith(subject) and RECIPIENT in m["to"]]


def wait_for_new_mail(stack: Stack, subject: str, seen: int, timeout: float) -> dict[str, Any]:
    """The first mail whose subject starts with ``subject`` beyond the ``seen`` there were before."""
    deadline = time.monotonic() + timeout
    while True:
        found = alert_mails(stack, subject)
        if len(found) > seen:
            return found[seen]
        assert time.monotonic() < deadline, f"no mail '{subject}...' within {timeout} s: {sink(stack)[-5:]}"
        time.sleep(1)


def test_a_stopped_api_replica_is_mailed_and_its_return_too(
    prometheus: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = prometheus
    firing_subject = "[FIRING:1] WharfReplicasMissing api"
    resolved_subject = "[RESOLVED] WharfReplicasMissing api"
    seen = {s: len(alert_mails(stack, s)) for s in (firing_subject, resolved_subject)}
    replica = stack.container_ids("api")[-1]

    started = time.monotonic()
    docker("stop", replica, timeout=90)
    try:
        firing = wait_for_new_mail(stack, firing_subject, seen[firing_subject], timeout=120)
        fired_after = time.monotonic() - started
    finally:
        docker("start", replica)
        wait_healthy(replica)
    back = time.monotonic()
    resolved = wait_for_new_mail(stack, resolved_subject, seen[resolved_subject], timeout=120)
    resolved_after = time.monotonic() - back

    assert "[FIRING] WharfReplicasMissing (critical)" in firing["text"]
    assert "api: only 1 replica(s) running" in firing["text"]
    assert "job=api" in firing["text"]
    assert firing["from"] == "Wharf alerts <alerts@wharf.localhost>"
    assert "[RESOLVED] WharfReplicasMissing (critical)" in resolved["text"]
    assert "Resolved: " in resolved["text"]
    with capsys.disabled():
        print(f"\n[alerting] stop -> alert mail {fired_after:.0f} s; healthy -> resolved mail {resolved_after:.0f} s")


def test_make_mail_lists_the_alert_mails(prometheus: Stack) -> None:
    """What an operator sees with `make mail` in development."""
    listing = run_make(prometheus, "mail").stdout
    assert f"{RECIPIENT}  [FIRING:1] WharfReplicasMissing api" in listing
    assert f"{RECIPIENT}  [RESOLVED] WharfReplicasMissing api" in listing


@pytest.mark.parametrize(
    ("service", "settings", "error"),
    [
        ("alertmanager", {"ALERT_MAIL_TO": ""}, "ALERT_MAIL_TO is required"),
        ("alertmanager", {"ALERT_SMTP_SMARTHOST": "smtp.example.com"}, "ALERT_SMTP_SMARTHOST: host:port"),
        ("alertmanager", {"ALERT_SMTP_REQUIRE_TLS": "yes"}, "ALERT_SMTP_REQUIRE_TLS: true or false"),
        ("alertmanager", {"ALERT_GROUP_WAIT": "soon"}, "ALERT_GROUP_WAIT: a duration"),
        ("alertmanager", {"ALERT_MAIL_TO": 'a@example.com"\nx: y'}, "ALERT_MAIL_TO: no double quote"),
        ("alertmanager", {"ALERT_SMTP_USERNAME": "alerts"}, "cannot read /run/secrets/alertmanager/smtp_password"),
        (  # a readable, non-empty file stands in for the password: refused in clear text
            "alertmanager",
            {"ALERT_SMTP_USERNAME": "alerts", "ALERT_SMTP_PASSWORD_FILE": "/etc/alertmanager/entrypoint.sh"},
            "ALERT_SMTP_REQUIRE_TLS=false would send the SMTP password in clear text",
        ),
        ("prometheus", {"API_REPLICAS": "two"}, "API_REPLICAS: the number of replicas the stack runs"),
    ],
)
def test_a_bad_setting_stops_the_container_with_one_line(
    prometheus: Stack, service: str, settings: dict[str, str], error: str
) -> None:
    """The service's image with its running container's environment, one setting changed."""
    container = prometheus.container_id(service)
    image = docker("inspect", "-f", "{{.Config.Image}}", container).stdout.strip()
    env = dict(
        item.split("=", 1) for item in json.loads(docker("inspect", "-f", "{{json .Config.Env}}", container).stdout)
    )
    options = [arg for name, value in (env | settings).items() for arg in ("-e", f"{name}={value}")]
    result = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", *options, image, check=False)
    assert result.returncode == 78, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("configuration error:")]
    assert error in line
