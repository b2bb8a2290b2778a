"""Day-two operations on the composed stack: metrics, logs, dump/load, operator commands."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wharf_common.devsecrets import KEY_NAME_FORMAT

from .conftest import PASSWORD, Stack, register, sign_in
from .conftest import run_make as _make

pytestmark = pytest.mark.integration


def _scrape(stack: Stack, container_id: str) -> str:
    """The metrics page a replica serves on its internal port (from inside its own container)."""
    status, page = stack.get_inside(container_id, "http://127.0.0.1:9000/metrics")
    assert status == 200
    return page


def _sample(page: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in page.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            total += float(match.group(2))
    return total


def _json_line(line: str) -> dict[str, object]:
    try:
        return json.loads(line.split("| ", 1)[1])
    except (IndexError, ValueError):
        return {}


def test_metrics_are_served_internally_and_summed_over_workers(stack: Stack, http: requests.Session) -> None:
    headers = sign_in(stack, http)
    for _ in range(10):
        assert http.get(f"{stack.base_url}/api/users?limit=1", headers=headers, timeout=10).status_code == 200
    api_pages = [_scrape(stack, cid) for cid in stack.compose("ps", "-q", "api").stdout.split()]
    served = sum(
        _sample(p, "wharf_http_request_duration_seconds_count", method="GET", route="/users", status="200")
        for p in api_pages
    )
    assert served >= 10
    assert sum(_sample(p, "wharf_token_verifications_total", outcome="valid") for p in api_pages) >= 10
    assert all("wharf_db_pool_connections_open" in p for p in api_pages)

    http.post(f"{stack.base_url}/auth/login", json={"email": "nobody@example.com", "password": "x" * 15}, timeout=10)
    auth_pages = [_scrape(stack, cid) for cid in stack.compose("ps", "-q", "auth").stdout.split()]
    assert sum(_sample(p, "wharf_auth_events_total", event="login_failure") for p in auth_pages) >= 1

    for path in ("/api/metrics", "/auth/metrics", "/metrics"):
        assert http.get(stack.base_url + path, timeout=10).status_code == 404


def test_a_user_journey_leaves_no_secret_in_any_log(stack: Stack, http: requests.Session) -> None:
    email = register(stack, http)
    tokens = http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10).json()
    refreshed = http.post(
        f"{stack.base_url}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}, timeout=10
    ).json()
    auth = {"Authorization": f"Bearer {refreshed['access_token']}"}
    assert http.get(f"{stack.base_url}/auth/me", headers=auth, timeout=10).status_code == 200
    created = http.post(
        f"{stack.base_url}/api/users",
        json={"name": "Log", "email": f"{uuid.uuid4().hex[:8]}@example.com"},
        headers=auth,
    )
    assert created.status_code == 201
    new_password = "a fresh and private passphrase 9"
    changed = http.post(
        f"{stack.base_url}/auth/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=auth,
        timeout=10,
    )
    assert changed.status_code == 204
    last = f"journey-end-{uuid.uuid4().hex}"
    http.post(
        f"{stack.base_url}/auth/login",
        json={"email": email, "password": "wrong " + PASSWORD},
        headers={"X-Request-ID": last},
        timeout=10,
    )

    # The services write INFO lines in batches (wharf_common.logs): wait for the journey's last
    # line from auth and the create's from api.
    created_line = f'"request_id": "{created.headers["X-Request-ID"]}"'
    deadline = time.monotonic() + 10
    while True:
        logs = stack.compose("logs", "--no-color", "api", "auth", "nginx").stdout
        if (f'"request_id": "{last}"' in logs and created_line in logs) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    secrets = [PASSWORD, new_password, tokens["access_token"], tokens["refresh_token"], refreshed["access_token"]]
    secrets += [refreshed["refresh_token"], tokens["access_token"].split(".")[2]]
    for secret in secrets:
        assert secret not in logs
    assert "Bearer " not in logs
    assert email not in logs  # only its hash
    # The service logs are JSON lines that name the account and the route.
    account_id = http.get(f"{stack.base_url}/auth/me", headers=auth, timeout=10)  # revoked by now
    assert account_id.status_code == 401
    api_lines = [_json_line(line) for line in logs.splitlines() if line.startswith("api-")]
    requests_logged = [e for e in api_lines if e.get("logger") == "wharf.request" and e.get("route") == "/users"]
    assert any(e.get("account_id") == created.json()["owner"] and e.get("status") == 201 for e in requests_logged)
    assert all({"time", "level", "service", "request_id", "method", "duration_ms"} <= set(e) for e in requests_logged)


def test_make_admin_grants_the_role_through_the_services_own_cli(stack: Stack, http: requests.Session) -> None:
    owner_headers = sign_in(stack, http)
    created = http.post(
        f"{stack.base_url}/api/users",
        json={"name": "Owned", "email": f"{uuid.uuid4().hex[:8]}@example.com"},
        headers=owner_headers,
        timeout=10,
    )
    assert created.status_code == 201
    path = f"{stack.base_url}/api/users/{created.json()['id']}"
    email = register(stack, http)
    user_headers = sign_in(stack, http, email)
    assert http.patch(path, json={"name": "Not yours"}, headers=user_headers, timeout=10).status_code == 403

    granted = _make(stack, "admin", f"EMAIL={email.upper()}")
    assert "admin" in granted.stdout
    admin_headers = sign_in(stack, http, email)  # a new token carries the new role
    assert http.get(f"{stack.base_url}/auth/me", headers=admin_headers, timeout=10).json()["roles"] == ["user", "admin"]
    assert http.patch(path, json={"name": "Admin's"}, headers=admin_headers, timeout=10).status_code == 200

    unknown = _make(stack, "admin", "EMAIL=nobody-at-all@example.com", check=False)
    assert unknown.returncode != 0
    assert "no account" in unknown.stderr
    usage = _make(stack, "admin", check=False)
    assert usage.returncode != 0
    assert "usage: make admin EMAIL=" in usage.stderr


def _all_accept(stack: Stack, http: requests.Session, headers: dict[str, str]) -> bool:
    """Every replica behind nginx (round robin, several calls each) accepts the token at auth and api."""
    for _ in range(6):
        for url in (f"{stack.base_url}/auth/me", f"{stack.base_url}/api/users?limit=1"):
            if http.get(url, headers=headers, timeout=10).status_code != 200:
                return False
    return True


def _kid(headers: dict[str, str]) -> str:
    return jwt.get_unverified_header(headers["Authorization"].split()[1])["kid"]


def test_make_rotate_keys_signs_with_a_new_key_while_old_tokens_keep_verifying(
    stack: Stack, http: requests.Session
) -> None:
    """The new key is published at once and signs only SIGNING_KEY_ACTIVATION_SECONDS after the time
    in its name, by which time every api worker has it or may fetch it: no token is ever refused."""
    activation = int(stack.env.get("SIGNING_KEY_ACTIVATION_SECONDS") or 10)  # compose's default
    jwks_url = f"{stack.base_url}/auth/.well-known/jwks.json"
    email = register(stack, http)
    before = sign_in(stack, http, email)
    old_kid = _kid(before)
    kids_before = {k["kid"] for k in http.get(jwks_url, timeout=10).json()["keys"]}
    assert old_kid in kids_before
    assert _all_accept(stack, http, before)
    # An unknown kid makes an api worker refetch the JWKS: the api workers fetch just before the
    # rotation, the case in which a key that signed at once was refused for JWKS_MIN_REFRESH_SECONDS.
    unknown = jwt.encode(
        {}, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "x" * 43, "typ": "at+jwt"}
    )
    for _ in range(8):
        refused = http.get(
            f"{stack.base_url}/api/users?limit=1", headers={"Authorization": f"Bearer {unknown}"}, timeout=10
        )
        assert refused.status_code == 401

    rotated = _make(stack, "rotate-keys")
    added = re.search(r"signing key added: \S+/(\S+)\.pem", rotated.stdout)
    assert added, rotated.stdout
    activated_at = datetime.strptime(added.group(1), KEY_NAME_FORMAT).replace(tzinfo=UTC).timestamp() + activation

    kids_after = {k["kid"] for k in http.get(jwks_url, timeout=10).json()["keys"]}
    (new_kid,) = kids_after - kids_before  # published at once, next to the previous keys
    assert kids_before <= kids_after
    # Until the activation the previous key signs; then the new one, at the latest a second later.
    signed_by_old_after_rotation = 0
    while True:
        started = time.time()
        after = sign_in(stack, http, email)
        finished = time.time()
        if _kid(after) == new_kid:
            assert finished >= activated_at, "the new key signed before its activation"
            break
        assert _kid(after) == old_kid
        assert started < activated_at + 1, "the new key does not sign after its activation"
        signed_by_old_after_rotation += 1
        assert _all_accept(stack, http, after)
        time.sleep(0.5)
    assert signed_by_old_after_rotation, "make rotate-keys took longer than the activation delay: nothing was checked"
    # The new key's first token is accepted by every replica of auth and api at once, and a token
    # signed by the previous key before the rotation keeps working everywhere.
    assert _all_accept(stack, http, after)
    assert _all_accept(stack, http, before)


def test_dump_loaded_into_a_fresh_stack_gives_the_same_data(
    stack: Stack, http: requests.Session, tmp_path: Path
) -> None:
    email = register(stack, http)
    headers = sign_in(stack, http, email)
    body = {"name": "Backed Up", "email": f"{uuid.uuid4().hex[:8]}@example.com"}
    created = http.post(f"{stack.base_url}/api/users", json=body, headers=headers, timeout=10)
    assert created.status_code == 201
    location = stack.base_url + created.headers["Location"]

    _make(stack, "dump", backup_dir=tmp_path)
    (dump,) = tmp_path.glob("wharf-*.dump")

    stack.compose("down", "--volumes", timeout=180)  # a fresh stack: empty database and cache
    stack.up()
    assert http.get(location, headers=sign_in(stack, http), timeout=10).status_code == 404

    _make(stack, "load", f"FILE={dump}", backup_dir=tmp_path)
    restored = http.get(location, headers=sign_in(stack, http, email), timeout=10)  # the account is back too
    assert restored.status_code == 200
    assert restored.json() == created.json()
    # A token issued before the dump still verifies (same signing keys, same account).
    assert http.get(location, headers=headers, timeout=10).status_code == 200
