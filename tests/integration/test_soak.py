"""The short version of `make soak` (bench/soak.py): its mixed load, with many distinct users, list
pages and accounts, against the shared stack, paced within the edge's default limits for one client
address, every container's memory sampled from its cgroup as it runs. It asserts the bound only (every
container below 80% of its memory limit) and no timing; whether memory stays flat over a long run is
what `make soak` itself decides (bench/README.md, "Memory under a long mixed load")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from .conftest import ROOT, Stack, psql_as_api, sign_in, wait_for_whole_sign_in_allowance

sys.path.insert(0, str(ROOT))  # bench/ is a tool run from the repository root, not an installed package
from bench import seed, soak

pytestmark = pytest.mark.integration

SECONDS = 40
ACCOUNTS = 8  # two sign-in requests each: within the edge's allowance for one address
ROWS = 5_000
# 8 connections, each waiting 100 ms on average after an answer: about 80 requests/s, under the
# edge's 100 r/s (and burst of 200) per client address.
CONNECTIONS, PACE_MS = 8, 100


def test_a_short_soak_keeps_every_container_below_its_memory_bound(
    stack: Stack, http: requests.Session, tmp_path: Path
) -> None:
    wait_for_whole_sign_in_allowance()
    tokens = [sign_in(stack, http)["Authorization"].removeprefix("Bearer ") for _ in range(ACCOUNTS)]
    seeded = psql_as_api(
        stack,
        "INSERT INTO api.users (id, name, email, owner, created_at, updated_at) SELECT gen_random_uuid(), 'Soak user '"
        f" || g, 'soak-seed-' || g || '@soak.example', NULL, now(), now() FROM generate_series(1, {ROWS}) g",
    )
    assert seeded.returncode == 0, seeded.stderr
    try:
        ids = psql_as_api(stack, "SELECT id FROM api.users ORDER BY random() LIMIT 2000").stdout.split()
        files = {
            "tokens": seed.write_lines(tmp_path / "tokens", tokens),
            "ids": seed.write_lines(tmp_path / "ids", ids),
            "pages": seed.write_lines(tmp_path / "pages", soak.page_paths(ids[:200])),
        }
        run = soak.drive(
            stack.base_url,
            files,
            project=stack.project,
            seconds=SECONDS,
            sample_seconds=5,
            connections=CONNECTIONS,
            pace_ms=PACE_MS,
        )
    finally:
        psql_as_api(stack, "DELETE FROM api.users WHERE email LIKE 'soak-seed-%' OR email LIKE 'bench-%@post.example'")
    assert run.result.requests > 0
    assert run.result.error_count == 0, run.result.errors
    assert len(run.times) >= SECONDS // 5, run.times  # memory printed over time, as `make soak` does
    assert {"api-1", "api-2", "auth-1", "auth-2", "nginx-1", "postgres-1", "redis-1"} <= set(run.series)
    assert run.failures(flat=False) == []
