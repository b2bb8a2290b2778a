"""The auth contract through nginx, as a client sees it."""

from __future__ import annotations

import pytest
import requests

from .conftest import PASSWORD, Stack, register

pytestmark = pytest.mark.integration


def _login(stack: Stack, http: requests.Session, email: str, password: str = PASSWORD) -> requests.Response:
    return http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": password}, timeout=10)


def test_register_login_me_refresh_retry_logout(stack: Stack, http: requests.Session) -> None:
    email = register(stack, http)
    tokens = _login(stack, http, email)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    access, refresh = body["access_token"], body["refresh_token"]

    me = http.get(f"{stack.base_url}/auth/me", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert me.status_code == 200
    assert me.json()["email"] == email
    assert me.json()["roles"] == ["user"]

    rotated = http.post(f"{stack.base_url}/auth/refresh", json={"refresh_token": refresh}, timeout=10)
    assert rotated.status_code == 200
    # A retry at once (the first answer lost, say) gets the same pair, at whichever auth replica.
    for _ in range(2):
        retried = http.post(f"{stack.base_url}/auth/refresh", json={"refresh_token": refresh}, timeout=10)
        assert retried.status_code == 200
        assert retried.json()["refresh_token"] == rotated.json()["refresh_token"]
        assert retried.json()["access_token"] == rotated.json()["access_token"]
    # (Reuse after the interval ends the session: test_token_attacks.py.)
    newest = http.post(
        f"{stack.base_url}/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]}, timeout=10
    )
    assert newest.status_code == 200

    second = _login(stack, http, email).json()["access_token"]
    headers = {"Authorization": f"Bearer {second}"}
    assert http.post(f"{stack.base_url}/auth/logout", headers=headers, timeout=10).status_code == 204
    assert http.get(f"{stack.base_url}/auth/me", headers=headers, timeout=10).status_code == 401


def test_lockout_after_five_failures(stack: Stack, http: requests.Session) -> None:
    email = register(stack, http)
    statuses = [_login(stack, http, email, "not the password at all").status_code for _ in range(5)]
    assert statuses == [401] * 5
    locked = _login(stack, http, email)  # the right password does not bypass the lockout
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0


def test_jwks_lists_signing_keys(stack: Stack, http: requests.Session) -> None:
    response = http.get(f"{stack.base_url}/auth/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    assert all(k["alg"] == "EdDSA" and k["use"] == "sig" and k["kid"] for k in keys)
    assert "max-age" in response.headers["Cache-Control"]
