"""Secrets and data never drift apart: the stack comes up on its data volume whatever secrets
directory it is given (another clone's, a regenerated one), and the Postgres superuser's password
follows the secret file (deploy/postgres/entrypoint.sh, scripts/compose.sh).

One compose project, one data volume, several secrets directories: that is what two clones of the
repository (or a deleted and regenerated deploy/compose/secrets/) look like to Docker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from .conftest import COMPOSE, ROOT, Stack, docker, images_of_its_own, new_stack, register, run_make, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.own_project(minutes=1.6)]


@pytest.fixture(scope="module")
def clone() -> Iterator[Callable[[Path], Stack]]:
    """A stack of this module's one project, with the secrets directory given (another clone's, as
    Docker sees it), on images of the project's own tag: its `make up` builds them."""
    project = os.environ.get("WHARF_IT_PROJECT", "wharf-it") + "-clones"
    with images_of_its_own("clones") as tag:
        yield lambda secrets_dir: new_stack(project, secrets_dir, WHARF_TAG=tag)
        down = [*COMPOSE, "-p", project, "down", "-v", "--remove-orphans"]
        subprocess.run(down, cwd=ROOT, capture_output=True, timeout=300, check=False)


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _superuser_login(stack: Stack, password: str) -> bool:
    """Whether the superuser logs in over TCP (as db-init does) with ``password``."""
    result = docker(
        "exec", "-e", f"PGPASSWORD={password}", stack.container_id("postgres"),
        "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "wharf", "-tAc", "SELECT 1",
        check=False,
    )  # fmt: skip
    return result.returncode == 0 and result.stdout.strip() == "1"


def _data_is_there(stack: Stack, email: str, location: str, document: dict[str, object]) -> None:
    with requests.Session() as http:
        headers = sign_in(stack, http, email)  # the account (and its password hash) is in the volume
        fetched = http.get(stack.base_url + location, headers=headers, timeout=10)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json() == document


def test_another_clone_and_regenerated_secrets_come_up_on_the_same_data(
    clone: Callable[[Path], Stack], tmp_path: Path
) -> None:
    first = clone(_directory(tmp_path / "clone-1"))
    first.compose("down", "-v", "--remove-orphans", check=False)
    first.up()
    with requests.Session() as http:
        email = register(first, http)
        created = http.post(
            first.base_url + "/api/users",
            json={"name": "First Clone", "email": "first-clone@example.com"},
            headers=sign_in(first, http, email),
            timeout=10,
        )
    assert created.status_code == 201, created.text
    location, document = created.headers["Location"], created.json()

    # A second clone's `make up` on the same project while the first one's stack runs: its own
    # (new) secrets directory, the first one's data volume.
    second = clone(_directory(tmp_path / "clone-2"))
    second.up()
    assert second.secret("postgres/password") != first.secret("postgres/password")
    assert _superuser_login(second, second.secret("postgres/password"))
    assert not _superuser_login(second, first.secret("postgres/password"))
    _data_is_there(second, email, location, document)

    # The secrets directory deleted altogether (not just emptied), with the stack down: `up`
    # makes it again, generates new secrets, and the data is still there.
    old_password = second.secret("postgres/password")
    second.compose("down", timeout=180)
    shutil.rmtree(second.secrets_dir)
    second.up()
    assert second.secret("postgres/password") != old_password
    assert _superuser_login(second, second.secret("postgres/password"))
    _data_is_there(second, email, location, document)


def test_data_of_another_postgres_major_version_stops_make_up_with_one_line(
    clone: Callable[[Path], Stack], tmp_path: Path
) -> None:
    """What postgres's entrypoint cannot fix stops `make up` at once (postgres-check, before
    postgres starts) with one line naming the cause and the fix, and no traceback."""
    stack = clone(_directory(tmp_path / "secrets"))
    stack.compose("down", "-v", "--remove-orphans", check=False)
    try:
        stack.compose("up", "-d", "--wait", "--wait-timeout", "120", "postgres")
        image = docker("inspect", "-f", "{{.Config.Image}}", stack.container_id("postgres")).stdout.strip()
        stack.compose("stop", "postgres")
        volume = f"{stack.project}_pgdata"
        docker("run", "--rm", "--user", "postgres", "-v", f"{volume}:/data", "--entrypoint", "bash", image,
               "-c", "echo 16 > /data/PG_VERSION")  # fmt: skip

        started = time.monotonic()
        made = run_make(stack, "up", check=False)
        took = time.monotonic() - started
        assert made.returncode != 0
        explained = [line for line in made.stderr.splitlines() if "configuration error" in line]
        assert len(explained) == 1, made.stderr
        assert explained[0].startswith("postgres-check: configuration error: the data volume holds PostgreSQL 16"), made
        assert "Fix:" in explained[0]
        assert "Traceback" not in made.stdout + made.stderr
        print(f"make up failed in {took:.0f} s: {explained[0]}")
    finally:
        stack.compose("down", "-v", "--remove-orphans", check=False, timeout=180)
