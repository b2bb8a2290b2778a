"""`make dev`: the development override mounts the services' source into the production images and
reloads the workers on a change, while the production configuration stays exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import COMPOSE, ROOT, Stack, new_stack

pytestmark = [pytest.mark.integration, pytest.mark.own_project(minutes=1)]

DEV_OVERRIDE = "deploy/compose/compose.dev.yaml"
SOURCES = {  # package -> its directory in the repository; mounted at /app/<package>
    "wharf_api": "services/api/src/wharf_api",
    "wharf_auth": "services/auth/src/wharf_auth",
    "wharf_common": "libs/wharf-common/src/wharf_common",
}
MOUNTS = {
    "api": ("wharf_api", "wharf_common"),
    "api-migrate": ("wharf_api", "wharf_common"),
    "auth": ("wharf_auth", "wharf_common"),
    "auth-migrate": ("wharf_auth", "wharf_common"),
    "auth-mail": ("wharf_auth", "wharf_common"),
}
RELOADING = ("api", "auth")


def _render(*files: str) -> dict[str, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if k not in {"WHARF_SOURCE_DIR", "COMPOSE_FILE"}}
    args = [arg for f in files for arg in ("-f", f)]
    out = subprocess.run(
        [*COMPOSE, *args, "config", "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(out)["services"]


def test_the_dev_override_only_mounts_the_source_and_turns_reload_on() -> None:
    production = _render("compose.yaml")
    dev = _render("compose.yaml", DEV_OVERRIDE)
    assert set(dev) == set(production)
    for name, service in dev.items():
        base = production[name]
        if name not in MOUNTS:
            assert service == base, name
            continue
        assert "volumes" not in base, name  # production runs the code baked into the image
        mounts = {(v["source"], v["target"], v.get("read_only")) for v in service["volumes"]}  # type: ignore[union-attr, index]
        assert mounts == {(str(ROOT / SOURCES[p]), f"/app/{p}", True) for p in MOUNTS[name]}, name
        env, base_env = dict(service["environment"]), dict(base["environment"])  # type: ignore[call-overload]
        assert env.pop("GUNICORN_RELOAD", None) == ("1" if name in RELOADING else None), name
        assert "GUNICORN_RELOAD" not in base_env
        assert env == base_env, name
        same = {k: v for k, v in service.items() if k not in {"volumes", "environment"}}
        assert same == {k: v for k, v in base.items() if k != "environment"}, name  # same image, command, limits


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """`make dev`'s configuration as its own project, on a copy of the source that the test edits."""
    source = tmp_path_factory.mktemp("dev-source")
    for path in SOURCES.values():
        shutil.copytree(ROOT / path, source / path, ignore=shutil.ignore_patterns("__pycache__"))
    stack = new_stack(
        f"{os.environ.get('WHARF_IT_PROJECT', 'wharf-it')}-dev",
        tmp_path_factory.mktemp("dev-secrets"),
        COMPOSE_FILE=f"compose.yaml:{DEV_OVERRIDE}",
        WHARF_SOURCE_DIR=str(source),
        API_REPLICAS="1",
        AUTH_REPLICAS="1",
    )
    stack.compose("down", "-v", "--remove-orphans", check=False)
    try:
        stack.up()
        yield stack, source
    finally:
        stack.compose("down", "-v", "--remove-orphans", check=False, timeout=180)


def _versions(stack: Stack) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for service in RELOADING:
        try:
            response = requests.get(f"{stack.base_url}/{service}/openapi.json", timeout=5)
            out[service] = response.json()["info"]["version"] if response.status_code == 200 else None
        except (requests.RequestException, ValueError):
            out[service] = None  # a worker restarting
    return out


def test_a_code_change_is_live_without_a_rebuild(dev_stack: tuple[Stack, Path]) -> None:
    stack, source = dev_stack
    assert _versions(stack) == {"api": "1.0.0", "auth": "1.0.0"}
    containers = {c["Name"] for c in stack.containers() if c["State"] == "running"}

    for package in ("wharf_api", "wharf_auth"):
        module = source / SOURCES[package] / "__init__.py"
        code = module.read_text()
        assert 'VERSION = "1.0.0"' in code
        module.write_text(code.replace('VERSION = "1.0.0"', 'VERSION = "1.0.0+edited"'))

    want = {"api": "1.0.0+edited", "auth": "1.0.0+edited"}
    deadline = time.monotonic() + 60
    while (seen := _versions(stack)) != want and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen == want
    # The same containers: the workers reloaded, nothing was rebuilt or recreated.
    assert {c["Name"] for c in stack.containers() if c["State"] == "running"} == containers
