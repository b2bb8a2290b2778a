"""Benchmark data: an account and its tokens over HTTP (a handful of calls), everything bulky in SQL.

Users rows and refresh tokens are generated inside Postgres (``generate_series``) as the owning
service's own role, so 1,000,000 rows take seconds instead of a million HTTP calls.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.stack import BenchStack

PASSWORD = "bench password, long enough for the policy"  # noqa: S105 - a throwaway benchmark account
OWNED_ROWS = 1000  # rows owned by the benchmark account, the targets of PATCH


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    access_tokens: list[str]


def _post_json(url: str, body: dict[str, str]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(  # noqa: S310 - the benchmark's own URL
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def account(stack: BenchStack, email: str, logins: int) -> Account:
    """Register ``email`` (or reuse it) and log in ``logins`` times: one access token per wrk thread."""
    base = stack.config.base_url
    status, body = _post_json(f"{base}/auth/register", {"email": email, "password": PASSWORD, "name": "Bench"})
    if status not in (201, 409):
        raise RuntimeError(f"register failed: {status} {body}")
    tokens = []
    for _ in range(logins):
        status, body = _post_json(f"{base}/auth/login", {"email": email, "password": PASSWORD})
        if status != 200:
            raise RuntimeError(f"login failed: {status} {body}")
        tokens.append(str(body["access_token"]))
    return Account(id=_subject(tokens[0]), email=email, access_tokens=tokens)


def _subject(token: str) -> str:
    """The ``sub`` claim, read without verifying: the token came straight from our own auth service."""
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


def refresh_tokens(stack: BenchStack, account_id: str, count: int) -> list[str]:
    """``count`` unused refresh tokens of ``account_id``, each in its own login family (as the auth role)."""
    prefix = f"bench-{secrets.token_hex(8)}-"
    stack.psql(
        "auth",
        f"""
        INSERT INTO auth.refresh_tokens (id, account_id, family_id, token_hash, expires_at)
        SELECT gen_random_uuid(), '{uuid.UUID(account_id)}', gen_random_uuid(),
               encode(sha256(convert_to('{prefix}' || g, 'UTF8')), 'hex'), now() + interval '1 day'
        FROM generate_series(1, {int(count)}) AS g;
        """,
    )
    return [f"{prefix}{n}" for n in range(1, count + 1)]


def grow_users(stack: BenchStack, rows: int, owner: str) -> None:
    """Add seeded users until the table has ``rows`` of them; the first OWNED_ROWS belong to ``owner``."""
    have = int(stack.psql("api", "SELECT count(*) FROM api.users WHERE email LIKE 'seed-%';").strip())
    if have >= rows:
        return
    stack.psql(
        "api",
        f"""
        INSERT INTO api.users (id, name, email, owner, created_at, updated_at)
        SELECT gen_random_uuid(), 'Seed user ' || g, 'seed-' || g || '@seed.example',
               CASE WHEN g <= {OWNED_ROWS} THEN '{uuid.UUID(owner)}' END, now(), now()
        FROM generate_series({have + 1}, {int(rows)}) AS g;
        ANALYZE api.users;
        """,
    )


def reset_users(stack: BenchStack) -> None:
    stack.psql("api", "TRUNCATE api.users, api.idempotency_keys;")


def user_count(stack: BenchStack) -> int:
    return int(stack.psql("api", "SELECT count(*) FROM api.users;").strip())


def sample_ids(stack: BenchStack, count: int, *, owner: str | None = None) -> list[str]:
    where = f"WHERE owner = '{uuid.UUID(owner)}'" if owner else ""
    out = stack.psql("api", f"SELECT id FROM api.users {where} ORDER BY random() LIMIT {int(count)};")
    return out.split()


def cursor_at(stack: BenchStack, fraction: float) -> str:
    """The list cursor that starts a page ``fraction`` of the way through the table (keyset: cost is
    the same at any depth)."""
    offset = int(user_count(stack) * fraction)
    return cursor_of(stack.psql("api", f"SELECT id FROM api.users ORDER BY id OFFSET {offset} LIMIT 1;").strip())


def cursor_of(user_id: str) -> str:
    """The list cursor of the page that starts after ``user_id`` (the api's keyset cursor)."""
    return base64.urlsafe_b64encode(uuid.UUID(user_id).bytes).rstrip(b"=").decode("ascii")


def recipe_ids(stack: BenchStack) -> list[str]:
    """The ids of the seed recipe's users (bench/ceiling/seed_recipe.py), from its own list."""
    with urllib.request.urlopen(f"{stack.config.seed_url}/api/users", timeout=10) as response:  # noqa: S310
        return [str(user["id"]) for user in json.loads(response.read())["items"]]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
