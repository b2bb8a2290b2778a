"""The api contract through nginx, with tokens from auth, as a client sees it."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from .conftest import Stack, sign_in

pytestmark = pytest.mark.integration


def test_users_resource_through_nginx(stack: Stack, http: requests.Session) -> None:
    api = f"{stack.base_url}/api"
    assert http.get(f"{api}/users", timeout=10).status_code == 401
    headers = sign_in(stack, http)
    email = f"{uuid.uuid4().hex[:10]}@example.com"

    created = http.post(f"{api}/users", json={"name": "Grace", "email": email}, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.startswith("/api/users/")  # the public path, through the proxy prefix

    first = http.get(stack.base_url + location, headers=headers, timeout=10)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert http.get(stack.base_url + location, headers=headers, timeout=10).headers["X-Cache"] == "HIT"
    unchanged = http.get(stack.base_url + location, headers={**headers, "If-None-Match": etag}, timeout=10)
    assert unchanged.status_code == 304

    patched = http.patch(
        stack.base_url + location,
        json={"name": "Grace Hopper"},
        headers={**headers, "If-Match": etag, "Content-Type": "application/merge-patch+json"},
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    stale = http.patch(stack.base_url + location, json={"name": "x"}, headers={**headers, "If-Match": etag}, timeout=10)
    assert stale.status_code == 412
    assert stale.headers["Content-Type"] == "application/problem+json"
    # Read-your-writes through the cache, on whichever replica answers.
    assert http.get(stack.base_url + location, headers=headers, timeout=10).json()["name"] == "Grace Hopper"

    stranger = sign_in(stack, http)
    assert http.delete(stack.base_url + location, headers=stranger, timeout=10).status_code == 403
    assert http.delete(stack.base_url + location, headers=headers, timeout=10).status_code == 204
    assert http.get(stack.base_url + location, headers=headers, timeout=10).status_code == 404


def test_seed_routes_keep_their_meaning_through_nginx(stack: Stack, http: requests.Session) -> None:
    """The acceptance line: GET /api/users, GET /api/users/<id> (404 for a missing one),
    POST /api/users (201; 4xx without a name), each with a token from auth."""
    api = f"{stack.base_url}/api/users"
    headers = sign_in(stack, http)
    listed = http.get(api, headers=headers, timeout=10)
    assert listed.status_code == 200
    assert set(listed.json()) == {"items", "next_cursor"}
    missing = http.get(f"{api}/{uuid.uuid4()}", headers=headers, timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/problem+json"
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    created = http.post(api, json={"name": "Seed", "email": email}, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    assert http.get(stack.base_url + created.headers["Location"], headers=headers, timeout=10).json()["name"] == "Seed"
    nameless = http.post(api, json={"email": f"x{email}"}, headers=headers, timeout=10)
    assert nameless.status_code == 422
    assert "name" in {e["field"] for e in nameless.json()["errors"]}


def test_idempotent_create_through_nginx(stack: Stack, http: requests.Session) -> None:
    headers = {**sign_in(stack, http), "Idempotency-Key": uuid.uuid4().hex}
    body = {"name": "Once", "email": f"{uuid.uuid4().hex[:10]}@example.com"}
    first = http.post(f"{stack.base_url}/api/users", json=body, headers=headers, timeout=10)
    again = http.post(f"{stack.base_url}/api/users", json=body, headers=headers, timeout=10)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_logout_revokes_at_api_within_two_seconds(stack: Stack, http: requests.Session) -> None:
    headers = sign_in(stack, http)
    # Every api process (2 replicas x 2 workers) has seen this token: each one must learn of the logout.
    for _ in range(8):
        assert http.get(f"{stack.base_url}/api/users?limit=1", headers=headers, timeout=10).status_code == 200
    assert http.post(f"{stack.base_url}/auth/logout", headers=headers, timeout=10).status_code == 204
    time.sleep(2.0)
    statuses = [
        http.get(f"{stack.base_url}/api/users?limit=1", headers=headers, timeout=10).status_code for _ in range(12)
    ]
    assert statuses == [401] * 12


def test_openapi_documents_through_nginx(stack: Stack, http: requests.Session) -> None:
    from openapi_spec_validator import validate

    for service in ("api", "auth"):
        document = http.get(f"{stack.base_url}/{service}/openapi.json", timeout=10)
        assert document.status_code == 200
        validate(document.json())
        # Relative to the document's URL (EDGE_PUBLIC_URL adds an absolute entry): a client generated
        # from it finds the service from the document alone (tests/integration/test_contract.py).
        assert [server["url"] for server in document.json()["servers"]] == [f"/{service}"]
