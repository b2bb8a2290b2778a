"""Bounded logs: every container logs through Docker's `local` driver, which rotates each container's
files at WHARF_LOG_MAX_SIZE and keeps WHARF_LOG_MAX_FILES of them (docs/operations.md, "Log shipping")."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import requests

from .conftest import Stack, container_ip, docker, wait_healthy

pytestmark = pytest.mark.integration

# Small enough for a fixed number of requests to fill it several times over.
SMALL = {"WHARF_LOG_MAX_SIZE": "32k", "WHARF_LOG_MAX_FILES": "2"}
SMALL_BOUND = 2 * 32 * 1024
REQUESTS = 1500  # an access line is over 200 bytes: at least 300 KB, more than four times the bound
UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _log_config(container: str) -> dict[str, object]:
    return json.loads(docker("inspect", "-f", "{{json .HostConfig.LogConfig}}", container).stdout)


def _bound(config: dict[str, object]) -> int:
    """max-size x max-file of a `local` log config, in bytes (Docker reads sizes in binary units)."""
    options: dict[str, str] = config["Config"]  # type: ignore[assignment]
    number, unit = re.fullmatch(r"(\d+)([bkmg]?)", options["max-size"].lower()).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit] * int(options["max-file"])


def _log_files(container: str) -> list[Path]:
    """The engine's files of one container's log (the `local` driver's directory; tests run as root)."""
    root = docker("info", "-f", "{{.DockerRootDir}}").stdout.strip()
    full_id = docker("inspect", "-f", "{{.Id}}", container).stdout.strip()
    return sorted((Path(root) / "containers" / full_id / "local-logs").glob("container.log*"))


def test_every_container_logs_through_the_rotating_driver(stack: Stack) -> None:
    for c in stack.containers():
        config = _log_config(str(c["ID"]))
        assert config["Type"] == "local", c["Service"]
        assert _bound(config) == 5 * 20 * 1024**2, c["Service"]  # the defaults: 5 files of 20 MiB
        assert sum(f.stat().st_size for f in _log_files(str(c["ID"]))) <= _bound(config), c["Service"]


def test_a_containers_log_files_stay_within_the_bound_however_much_it_logs(
    stack: Stack, http: requests.Session
) -> None:
    """A second edge of the stack, with a bound a fixed number of requests passes many times over:
    its files never add up to more than the bound, and the newest lines are the ones kept."""
    name = f"{stack.project}-logs-{uuid.uuid4().hex[:8]}"
    started = stack.compose("run", "--detach", "--no-deps", "--name", name, "nginx", env=SMALL)
    assert started.returncode == 0, started.stderr
    try:
        wait_healthy(name)
        url = f"http://{container_ip(name, f'{stack.project}_public')}:8080/healthz"
        last = ""
        for n in range(REQUESTS):
            last = f"log-bound-{n:05d}-{uuid.uuid4().hex}"
            assert http.get(url, headers={"X-Request-ID": last}, timeout=10).status_code == 200
        docker("stop", name, timeout=60)  # nginx writes what it buffered, then its log is complete
        files = _log_files(name)
        assert _bound(_log_config(name)) == SMALL_BOUND
        assert len(files) == 2, files  # rotated: the current file and one compressed older one
        assert sum(f.stat().st_size for f in files) <= SMALL_BOUND, [(f.name, f.stat().st_size) for f in files]
        kept = docker("logs", name, timeout=60).stdout
        assert last in kept  # the newest line is there
        assert "log-bound-00000-" not in kept  # the oldest went with the rotation
    finally:
        docker("rm", "--force", name, check=False)
