"""Prometheus's alert rules (deploy/prometheus/rules/<topic>.yml), each unit-tested by its
<topic>.test.yml with `promtool test rules`, run from the Prometheus image the stack runs (so the
rules are tested by the version that evaluates them). A file added later is found and run here
without a change to this module."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from conftest import base_image  # noqa: E402 (the root conftest's: the images `make test` uses)

RULES = ROOT / "deploy" / "prometheus" / "rules"
TEST_SUFFIX = ".test.yml"
TEST_FILES = sorted(RULES.glob(f"*{TEST_SUFFIX}"))
RULE_FILES = sorted(path for path in RULES.glob("*.yml") if not path.name.endswith(TEST_SUFFIX))
SEVERITIES = {"critical", "warning"}


def promtool(*args: str, rules: Path = RULES) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` in the rules directory, from the Prometheus image, with no network."""
    command = ["docker", "run", "--rm", "--network", "none", "--volume", f"{rules}:/rules:ro", "--workdir", "/rules"]
    command += ["--entrypoint", "promtool", base_image("PROMETHEUS_IMAGE"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def alerts(path: Path) -> dict[str, dict[str, Any]]:
    """The alerting rules of a rule file, by name."""
    return {rule["alert"]: rule for group in load(path)["groups"] for rule in group["rules"] if "alert" in rule}


def test_there_are_rules_and_tests_to_run() -> None:
    assert RULE_FILES, f"no rule file in {RULES}"
    assert TEST_FILES, f"no {TEST_SUFFIX} in {RULES}"


def test_promtool_unit_tests_pass() -> None:
    """Every test file in one promtool run (one container); its output names each file's result."""
    result = promtool("test", "rules", *(path.name for path in TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_every_rule_file_is_valid() -> None:
    result = promtool("check", "rules", *(path.name for path in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_file_has_its_own_tests() -> None:
    for rule_file in RULE_FILES:
        test_file = rule_file.with_name(rule_file.name.removesuffix(".yml") + TEST_SUFFIX)
        assert test_file.exists(), f"{rule_file.name} has no {test_file.name}"
        assert rule_file.name in load(test_file)["rule_files"], f"{test_file.name} does not load {rule_file.name}"


def test_every_alert_is_seen_firing_in_a_test() -> None:
    """A rule no test makes fire could be wrong in any way at all."""
    defined = {name for path in RULE_FILES for name in alerts(path)}
    fired = {
        case["alertname"]
        for path in TEST_FILES
        for test in load(path)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert defined - fired == set(), "alerts that no test sees firing"


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    """Alertmanager's mail shows the severity, the summary and the description of each alert."""
    for path in RULE_FILES:
        for name, rule in alerts(path).items():
            assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{path.name} {name}: severity"
            annotations = rule.get("annotations", {})
            assert annotations.get("summary"), f"{path.name} {name}: no summary"
            assert annotations.get("description"), f"{path.name} {name}: no description"


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """Guards the guard: promtool fails a test whose expected alert differs from the one that fires."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    test_file = rules / "availability.test.yml"
    expected = "exp_labels: {severity: critical, job: api}"
    text = test_file.read_text()
    assert expected in text
    test_file.write_text(text.replace(expected, expected.replace("critical", "warning")))
    result = promtool("test", "rules", test_file.name, rules=rules)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


def test_the_scrape_configurations_are_valid() -> None:
    """compose's (built into wharf/prometheus) and the Kubernetes component's."""
    for config in (ROOT / "deploy/prometheus/prometheus.yml", ROOT / "k8s/components/observability/prometheus.yml"):
        result = promtool("check", "config", "--syntax-only", config.name, rules=config.parent)
        assert result.returncode == 0, f"{config}: {result.stdout}{result.stderr}"
