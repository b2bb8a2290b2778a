"""Alerts reach a person: an api replica stops, Prometheus's rule fires, Alertmanager mails it to
the development sink (what `make mail` shows); the replica starts again and the resolution is
mailed too. Prometheus runs the production rules and configuration with short intervals and
`for:` durations (alerting.compose.yaml), Alertmanager with short grouping settings: the same
path, in seconds instead of minutes."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, Stack, docker, run_make, wait_healthy

pytestmark = pytest.mark.integration

FILES = ("-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "tests/integration/alerting.compose.yaml"))
PROFILE = ("--profile", "observability")
PROFILE_SERVICES = (
    "prometheus",
    "alertmanager",
    "nginx-exporter",
    "mail-metrics",
    "node-exporter",
    "blackbox-exporter",
)
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


def fast_prometheus(directory: Path) -> None:
    """The production prometheus.yml and rules, with the short intervals and durations above."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": FAST["scrape_interval"], "scrape_timeout": "1s"}
    config["global"]["evaluation_interval"] = FAST["evaluation_interval"]
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        for sd in job.get("dns_sd_configs", []):
            sd["refresh_interval"] = FAST["dns_refresh_interval"]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = directory / "rules"
    rules.mkdir()
    for source in (ROOT / "deploy/prometheus/rules").glob("*.yml"):
        if source.name.endswith(".test.yml"):
            continue
        document = yaml.safe_load(source.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = FAST["for"]
        (rules / source.name).write_text(yaml.safe_dump(document))


@pytest.fixture(scope="module")
def alerting(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The profile started beside the session's stack with the fast settings; removed afterwards."""
    directory = tmp_path_factory.mktemp("prometheus")
    fast_prometheus(directory)
    env = stack.env | ALERTMANAGER_SETTINGS | {"WHARF_TEST_PROMETHEUS_DIR": str(directory)}
    fast = dataclasses.replace(stack, env=env)
    try:
        result = fast.compose(
            *FILES, *PROFILE, "up", "-d", "--wait", "--wait-timeout", "180", "prometheus", check=False
        )
        assert result.returncode == 0, result.stderr
        yield fast
    finally:
        fast.compose(*FILES, *PROFILE, "rm", "--stop", "--force", "--volumes", *PROFILE_SERVICES, check=False)
        for volume in ("promdata", "alertdata"):
            docker("volume", "rm", f"{stack.project}_{volume}", check=False)


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
    alerting: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = alerting
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


def test_make_mail_lists_the_alert_mails(alerting: Stack) -> None:
    """What an operator sees with `make mail` in development."""
    listing = run_make(alerting, "mail").stdout
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
    alerting: Stack, service: str, settings: dict[str, str], error: str
) -> None:
    options = [arg for name, value in settings.items() for arg in ("-e", f"{name}={value}")]
    result = alerting.compose(*FILES, *PROFILE, "run", "--rm", "--no-deps", *options, service, check=False)
    assert result.returncode == 78, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("configuration error:")]
    assert error in line
