from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select, text
from werkzeug.serving import make_server

from wharf_api.idempotency import _lock_id
from wharf_api.models import User
from wharf_auth import extensions as auth_extensions
from wharf_common import authn, revocation
from wharf_common import extensions as common
from wharf_common.cache import BREAKER_PAUSE_SECONDS, CONFIRM_SECONDS, SOCKET_TIMEOUT_SECONDS
from wharf_common.db import CLIENT_GRACE_SECONDS, CONNECT_TIMEOUT_SECONDS, autocommit_connection, get_session
from wharf_common.validation import EMAIL_PATTERN


def _count_users(app: Flask) -> int:
    with app.app_context():
        return get_session().scalar(select(func.count()).select_from(User)) or 0


def _create(client: Any, name: str = "Ada", email: str = "ada@example.com", **kwargs: object) -> dict:
    response = client.post("/users", json={"name": name, "email": email}, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# -- the seed contract --------------------------------------------------------------------------


def test_create_then_read(client: Any) -> None:
    created = client.post("/users", json={"name": " Ada ", "email": "Ada@Example.COM"})
    assert created.status_code == 201
    body = created.get_json()
    assert (body["name"], body["email"]) == ("Ada", "ada@example.com")
    assert body["owner"] == client.account.id
    assert created.headers["Location"] == f"/users/{body['id']}"
    assert created.headers["ETag"]

    fetched = client.get(created.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.get_json() == body
    assert fetched.headers["ETag"] == created.headers["ETag"]
    listed = client.get("/users").get_json()
    assert [u["id"] for u in listed["items"]] == [body["id"]]
    assert listed["next_cursor"] is None


def test_seed_routes_keep_their_meaning(client: Any) -> None:
    """The routes the service started with answer as they did (now with a token): list, read (404
    for a missing user), create (201; 4xx without a name)."""
    listed = client.get("/users")
    assert listed.status_code == 200
    assert listed.get_json() == {"items": [], "next_cursor": None}
    assert client.get(f"/users/{uuid.uuid4()}").status_code == 404
    created = client.post("/users", json={"name": "Seed", "email": "seed@example.com"})
    assert created.status_code == 201
    assert client.get(created.headers["Location"]).get_json()["name"] == "Seed"
    for nameless in ({"email": "n1@example.com"}, {"name": "", "email": "n2@example.com"}, {"name": None}):
        refused = client.post("/users", json=nameless)
        assert refused.status_code == 422, nameless
        assert "name" in {e["field"] for e in refused.get_json()["errors"]}
    assert [u["name"] for u in client.get("/users").get_json()["items"]] == ["Seed"]


def test_missing_user_is_404_problem(client: Any) -> None:
    for user_id in (str(uuid.uuid4()), "not-a-uuid", "..%2F..%2Fetc%2Fpasswd"):
        for method in ("GET", "PATCH", "DELETE"):
            response = client.open(method, f"/users/{user_id}", json={"name": "x"})
            assert response.status_code == 404, (method, user_id)
            assert response.mimetype == "application/problem+json"
            assert response.get_json()["status"] == 404


def test_invalid_fields_are_all_listed_and_nothing_is_mass_assigned(client: Any, app: Flask) -> None:
    response = client.post(
        "/users",
        json={"email": "nope", "id": str(uuid.uuid4()), "owner": "someone", "created_at": "2020-01-01T00:00:00Z"},
    )
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert fields == {"name", "email", "id", "owner", "created_at"}
    assert client.post("/users", json={"name": "   ", "email": "a@example.com"}).status_code == 422
    assert client.post("/users", json={"name": "x" * 101, "email": "a@example.com"}).status_code == 422
    assert _count_users(app) == 0


def test_control_characters_are_422_not_500(client: Any) -> None:
    assert client.post("/users", json={"name": "a\u0000b", "email": "nul@example.com"}).status_code == 422
    user = _create(client)
    assert client.patch(f"/users/{user['id']}", json={"name": "tab\there"}).status_code == 422


def test_duplicate_email_is_409(client: Any) -> None:
    _create(client, "A", "dup@example.com")
    for headers in ({}, {"Idempotency-Key": "dup-1"}):  # one statement on its own; or a transaction
        response = client.post("/users", json={"name": "B", "email": "DUP@example.com"}, headers=headers)
        assert response.status_code == 409
        assert response.get_json()["type"] == "https://wharf.dev/problems/conflict"
    # The refused create kept nothing under its key: another body may use it.
    again = client.post("/users", json={"name": "C", "email": "c@example.com"}, headers={"Idempotency-Key": "dup-1"})
    assert again.status_code == 201


def test_body_must_be_json(client: Any) -> None:
    assert client.post("/users", data="name=x", content_type="text/plain").status_code == 415
    malformed = client.post("/users", data="{", content_type="application/json")
    assert malformed.status_code == 400
    assert malformed.mimetype == "application/problem+json"
    assert client.post("/users", json=["a list"]).status_code == 400


# -- authentication and authorization -----------------------------------------------------------


def test_every_route_needs_a_token(anonymous: FlaskClient) -> None:
    routes = [("GET", "/users"), ("GET", f"/users/{uuid.uuid4()}"), ("POST", "/users")]
    routes += [("PATCH", f"/users/{uuid.uuid4()}"), ("DELETE", f"/users/{uuid.uuid4()}")]
    for method, path in routes:
        response = anonymous.open(path, method=method, json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.mimetype == "application/problem+json"
        bad = anonymous.open(path, method=method, json={}, headers={"Authorization": "Bearer not.a.token"})
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    assert anonymous.get("/users", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401


def test_expired_and_foreign_tokens_are_401(anonymous: FlaskClient, auth_app: Flask) -> None:
    keyring = auth_extensions.of(auth_app).keyring
    common = {"subject": str(uuid.uuid4()), "roles": ["admin"], "family_id": None}
    expired, _ = keyring.sign_access_token(issuer="wharf-auth", audience="wharf", ttl=-120, **common)
    wrong_audience, _ = keyring.sign_access_token(issuer="wharf-auth", audience="elsewhere", ttl=60, **common)
    wrong_issuer, _ = keyring.sign_access_token(issuer="evil", audience="wharf", ttl=60, **common)
    valid, _ = keyring.sign_access_token(issuer="wharf-auth", audience="wharf", ttl=60, **common)
    for token in (expired, wrong_audience, wrong_issuer, valid[:-4] + "AAAA"):
        assert anonymous.get("/users", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert anonymous.get("/users", headers={"Authorization": f"Bearer {valid}"}).status_code == 200


class _WithHeaders:
    def __init__(self, client: FlaskClient, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)


def _wait_for_status(client: Any, path: str, status: int, within: float) -> float:
    started = time.monotonic()
    while True:
        if client.get(path).status_code == status:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"{path} did not answer {status} within {within} s")
        time.sleep(0.05)


def test_logout_revokes_the_token_at_api_within_two_seconds(
    client: Any, auth_app: Flask, sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    assert client.get("/users").status_code == 200
    assert auth_app.test_client().post("/logout", headers=client.account.headers).status_code == 204
    _wait_for_status(client, "/users", 401, within=2.0)
    # Another session of the same account is not affected.
    other = authed(sign_up("second@example.com"))
    assert other.get("/users").status_code == 200


def test_revocations_reach_api_from_postgres_without_redis(
    app: Flask, auth_app: Flask, sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    """The push is lost (published where nobody listens); the periodic re-sync still catches it."""
    account = sign_up("nopush@example.com")
    client = authed(account)
    assert client.get("/users").status_code == 200
    auth_redis = common.of(auth_app).redis
    publish = auth_redis.publish
    auth_redis.publish = lambda *args, **kwargs: 0  # drop the push
    try:
        assert auth_app.test_client().post("/logout", headers=account.headers).status_code == 204
    finally:
        auth_redis.publish = publish
    _wait_for_status(client, "/users", 401, within=revocation.SYNC_SECONDS + 2)


def test_password_change_ends_every_session_at_api(
    app: Flask, auth_app: Flask, sign_up: Callable[..., Any], authed: Callable[..., Any], password: str
) -> None:
    account = sign_up("changer@example.com")
    client = authed(account)
    assert client.get("/users").status_code == 200
    changed = auth_app.test_client().post(
        "/password",
        headers=account.headers,
        json={"current_password": password, "new_password": "an entirely new passphrase 77"},
    )
    assert changed.status_code == 204
    _wait_for_status(client, "/users", 401, within=2.0)


def test_stale_revocation_list_fails_closed(
    make_api: Callable[..., Flask], auth_app: Flask, sign_up: Callable[..., Any]
) -> None:
    """auth publishes its keys but its revocation list cannot be read: authenticated routes fail
    closed (503), they never trust a token that may have been revoked."""

    def keys_only(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/.well-known/jwks.json":
            return auth_app.wsgi_app(environ, start_response)
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]

    server = make_server("127.0.0.1", 0, keys_only, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = make_api(auth_url=f"http://127.0.0.1:{server.server_port}", redis_url="redis://127.0.0.1:9/0")
        response = app.test_client().get("/users", headers=sign_up("stale@example.com").headers)
    finally:
        server.shutdown()
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.mimetype == "application/problem+json"
    assert "revocations" in response.get_json()["detail"]


OPERATIONS = ("list", "read", "create", "patch", "delete")
EXPECTED_BY_CALLER = {
    "owner": (200, 200, 201, 200, 204),
    "admin": (200, 200, 201, 200, 204),
    "other user": (200, 200, 201, 403, 403),
    "no token": (401, 401, 401, 401, 401),
    "expired token": (401, 401, 401, 401, 401),
    "revoked token": (401, 401, 401, 401, 401),
}


def test_authorization_matrix_every_caller_on_every_operation(
    client: Any,
    app: Flask,
    auth_app: Flask,
    sign_up: Callable[..., Any],
    password: str,
) -> None:
    """Each kind of caller on each operation, against a user the owner created. The expired and
    the revoked tokens are the owner's own (the expired one even claims admin): still 401."""
    settings = common.of(app).settings
    other = sign_up("other@example.com")
    admin = sign_up("admin@example.com", admin=True)
    expired, _ = auth_extensions.of(auth_app).keyring.sign_access_token(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        subject=client.account.id,
        roles=["user", "admin"],
        family_id=None,
        ttl=-120,
    )
    auth = auth_app.test_client()
    revoked = auth.post("/login", json={"email": client.account.email, "password": password}).get_json()
    revoked_headers = {"Authorization": f"Bearer {revoked['access_token']}"}
    assert client.get("/users", headers=revoked_headers).status_code == 200
    assert auth.post("/logout", headers=revoked_headers).status_code == 204
    headers_by_caller = {
        "owner": client.account.headers,
        "admin": admin.headers,
        "other user": other.headers,
        "no token": {},
        "expired token": {"Authorization": f"Bearer {expired}"},
        "revoked token": revoked_headers,
    }
    anonymous = app.test_client()
    _wait_for_status(_WithHeaders(anonymous, revoked_headers), "/users", 401, within=2.0)

    actual = {}
    for number, (caller, headers) in enumerate(headers_by_caller.items()):
        target = _create(client, f"Target {number}", f"target{number}@example.com")
        path = f"/users/{target['id']}"
        responses = {
            "list": anonymous.get("/users", headers=headers),
            "read": anonymous.get(path, headers=headers),
            "create": anonymous.post("/users", json={"name": "New", "email": f"new{number}@ex.com"}, headers=headers),
            "patch": anonymous.patch(path, json={"name": f"Changed by {caller}"}, headers=headers),
            "delete": anonymous.delete(path, headers=headers),
        }
        actual[caller] = tuple(responses[operation].status_code for operation in OPERATIONS)
        for operation, response in responses.items():
            if response.status_code == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), (caller, operation)
            if response.status_code >= 400:
                assert response.mimetype == "application/problem+json", (caller, operation)
        kept = client.get(path)
        if responses["delete"].status_code != 204:  # refused writes changed nothing
            assert kept.status_code == 200, caller
            assert kept.get_json()["name"] == f"Target {number}", caller
        else:
            assert kept.status_code == 404, caller
    assert actual == EXPECTED_BY_CALLER
    created = sum(statuses[OPERATIONS.index("create")] == 201 for statuses in actual.values())
    deleted = sum(statuses[OPERATIONS.index("delete")] == 204 for statuses in actual.values())
    assert _count_users(app) == len(EXPECTED_BY_CALLER) + created - deleted  # refused creates wrote nothing


# -- merge patch and conditional requests -------------------------------------------------------


def test_merge_patch_rules(client: Any) -> None:
    user = _create(client)
    path = f"/users/{user['id']}"
    patched = client.patch(path, json={"email": "ADA@lovelace.org"}, content_type="application/merge-patch+json")
    assert patched.status_code == 200
    assert patched.get_json()["email"] == "ada@lovelace.org"
    assert patched.get_json()["name"] == "Ada"
    assert patched.get_json()["updated_at"] > user["updated_at"]
    refused = client.patch(path, json={"name": None, "owner": "me", "id": "x"})
    assert refused.status_code == 422
    assert {e["field"] for e in refused.get_json()["errors"]} == {"name", "owner", "id"}
    _create(client, "Taken", "taken@example.com")
    assert client.patch(path, json={"email": "taken@example.com"}).status_code == 409
    assert client.patch(path, data="{", content_type="application/merge-patch+json").status_code == 400
    assert client.patch(path, data="x", content_type="text/plain").status_code == 415


def test_a_json_patch_is_415_naming_the_accepted_types(client: Any) -> None:
    """application/json-patch+json (RFC 6902) is a list of operations, not a merge patch: refused,
    never applied as one (issue 22). Any other +json type is refused too."""
    user = _create(client)
    path = f"/users/{user['id']}"
    for media_type in ("application/json-patch+json", "application/problem+json", "application/vnd.x+json"):
        refused = client.patch(path, data=json.dumps({"name": "Patched"}), content_type=media_type)
        assert refused.status_code == 415, media_type
        assert refused.mimetype == "application/problem+json"
        detail = refused.get_json()["detail"]
        assert "application/merge-patch+json" in detail
        assert "application/json" in detail
        assert refused.headers["Accept-Patch"] == "application/merge-patch+json, application/json"
    assert client.get(path).get_json()["name"] == "Ada"
    created = client.post(
        "/users", data=json.dumps({"name": "B", "email": "b@example.com"}), content_type="application/x+json"
    )
    assert created.status_code == 415
    assert created.get_json()["detail"] == "The request body must be application/json."
    assert "Accept-Patch" not in created.headers


def test_empty_answers_carry_no_content_type(client: Any) -> None:
    user = _create(client)
    deleted = client.delete(f"/users/{user['id']}")
    assert deleted.status_code == 204
    assert "Content-Type" not in deleted.headers
    options = client.open("OPTIONS", "/users")
    assert options.status_code == 200
    assert "Content-Type" not in options.headers
    assert {"GET", "POST"} <= set(options.headers["Allow"].replace(" ", "").split(","))


def test_if_match_can_be_required(
    make_api: Callable[..., Flask], sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    """REQUIRE_IF_MATCH: a write without If-Match is 428 (RFC 6585), so no client overwrites a
    change it has not seen; the document then says If-Match is required."""
    strict = make_api(require_if_match=True)
    client = authed(sign_up("careful@example.com"), strict)
    user = _create(client)
    path = f"/users/{user['id']}"
    for method in ("PATCH", "DELETE"):
        missing = client.open(method, path, json={"name": "Blind write"})
        assert missing.status_code == 428, method
        assert missing.mimetype == "application/problem+json"
        assert missing.get_json()["type"] == "https://wharf.dev/problems/precondition-required"
        assert "If-Match" in missing.get_json()["detail"]
    etag = client.get(path).headers["ETag"]
    assert client.patch(path, json={"name": "Seen"}, headers={"If-Match": etag}).status_code == 200
    assert client.patch(path, json={"name": "Lost"}, headers={"If-Match": etag}).status_code == 412
    assert client.delete(path, headers={"If-Match": "*"}).status_code == 204
    document = strict.test_client().get("/openapi.json").get_json()
    for method in ("patch", "delete"):
        (if_match,) = [
            p for p in document["paths"]["/users/{user_id}"][method]["parameters"] if p["name"] == "If-Match"
        ]
        assert if_match["required"] is True


def test_etags(client: Any) -> None:
    user = _create(client)
    path = f"/users/{user['id']}"
    first = client.get(path)
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")
    not_modified = client.get(path, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.headers["ETag"] == etag
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200

    changed = client.patch(path, json={"name": "Ada L."}, headers={"If-Match": etag})
    assert changed.status_code == 200
    new_etag = changed.headers["ETag"]
    assert new_etag != etag
    stale = client.patch(path, json={"name": "Lost update"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.mimetype == "application/problem+json"
    assert client.delete(path, headers={"If-Match": etag}).status_code == 412
    assert client.get(path).get_json()["name"] == "Ada L."
    assert client.get(path).headers["ETag"] == new_etag
    assert client.delete(path, headers={"If-Match": new_etag}).status_code == 204


# -- pagination ---------------------------------------------------------------------------------


def _walk(client: Any, limit: int, during: Callable[[], None] | None = None) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = f"/users?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query).get_json()
        seen += [u["id"] for u in page["items"]]
        if during:
            during()
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_keyset_pagination_visits_every_row_once_under_concurrent_inserts(client: Any, app: Flask) -> None:
    with app.app_context():
        session = get_session()
        session.add_all(User(name=f"user {i}", email=f"user{i}@example.com", owner="seed") for i in range(53))
        session.commit()
        existing = {str(u) for u in session.scalars(select(User.id))}
    inserted = iter(range(1000))

    def insert_more() -> None:
        for _ in range(3):
            i = next(inserted)
            _create(client, f"late {i}", f"late{i}@example.com")

    seen = _walk(client, 10, during=insert_more)
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert existing <= set(seen), "a row that existed before the walk was skipped"
    assert seen == sorted(seen, key=uuid.UUID)


def _bulk_insert(app: Flask, count: int) -> list[str]:
    """``count`` users straight into the table (one statement), analysed; their ids in id order."""
    with app.app_context():
        session = get_session()
        session.execute(
            text(
                "INSERT INTO api.users (id, name, email, owner) SELECT gen_random_uuid(), 'bulk ' || n,"
                " 'bulk' || n || '@example.com', 'seed' FROM generate_series(1, :count) AS n"
            ),
            {"count": count},
        )
        session.commit()
        session.execute(text("ANALYZE api.users"))
        session.commit()
        return [str(u) for u in session.scalars(select(User.id).order_by(User.id))]


def test_limit_default_and_bounds(client: Any, app: Flask) -> None:
    ids = _bulk_insert(app, 23)
    first = client.get("/users").get_json()
    assert [u["id"] for u in first["items"]] == ids[:20]  # default 20
    rest = client.get(f"/users?cursor={first['next_cursor']}").get_json()
    assert [u["id"] for u in rest["items"]] == ids[20:]
    assert rest["next_cursor"] is None
    one = client.get("/users?limit=1").get_json()
    assert [u["id"] for u in one["items"]] == ids[:1]
    assert one["next_cursor"] is not None
    exact = client.get("/users?limit=23").get_json()  # a page that ends exactly at the last row
    assert len(exact["items"]) == 23
    assert exact["next_cursor"] is None
    assert len(client.get("/users?limit=100").get_json()["items"]) == 23


def test_pagination_with_a_concurrent_writer_returns_every_row_exactly_once(
    client: Any, app: Flask, authed: Callable[..., Any], sign_up: Callable[..., Any]
) -> None:
    """Another client creates users (through the api, so list pages are invalidated) the whole time
    a walk runs: every row that existed before is returned exactly once, nothing is returned twice,
    nothing appears that was never written, and pages stay in id order and within the limit."""
    existing = set(_bulk_insert(app, 60))
    writer = authed(sign_up("writer@example.com"))
    written: list[str] = []
    walking = threading.Event()
    done = threading.Event()

    def write() -> None:
        walking.wait()
        while not done.is_set():
            written.append(_create(writer, f"late {len(written)}", f"late{len(written)}@example.com")["id"])

    pages: list[list[str]] = []
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(write)
        cursor = None
        walking.set()
        while True:
            time.sleep(0.01)  # let the writer in between pages as well
            page = client.get("/users?limit=7" + (f"&cursor={cursor}" if cursor else "")).get_json()
            pages.append([u["id"] for u in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        done.set()
        writing.result(timeout=30)

    seen = [user_id for page in pages for user_id in page]
    assert len(written) >= 5, "the writer did not run during the walk"
    assert all(len(page) <= 7 for page in pages)
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert existing <= set(seen), "a row that existed before the walk was skipped"
    assert set(seen) <= existing | set(written), "a row was returned that was never written"
    assert seen == sorted(seen, key=uuid.UUID)


def _plan_of_list_query(app: Flask, client: Any, url: str) -> dict[str, Any]:
    """The executed plan (EXPLAIN ANALYZE) of the users query the list route ran for ``url``."""
    engine = common.of(app).engine
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "FROM api.users" in statement:
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        response = client.get(url)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "MISS"
    [(statement, parameters)] = statements
    with engine.connect() as connection:
        plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).scalar_one()
    return plan[0]["Plan"]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


@pytest.mark.timing
def test_a_deep_page_costs_what_the_first_page_costs(client: Any, app: Flask) -> None:
    """Keyset pagination: page 1 and page 1,000 (of 20 rows) both read 21 index entries, never
    the rows before them (no OFFSET, no sort of the whole table)."""
    ids = _bulk_insert(app, 20_000)
    deep_cursor = base64.urlsafe_b64encode(uuid.UUID(ids[19_979]).bytes).rstrip(b"=").decode()
    for url in ("/users?limit=20", f"/users?limit=20&cursor={deep_cursor}"):
        nodes = _nodes(_plan_of_list_query(app, client, url))
        kinds = [node["Node Type"] for node in nodes]
        assert "Seq Scan" not in kinds, (url, kinds)
        assert "Sort" not in kinds, (url, kinds)
        [scan] = [node for node in nodes if node["Node Type"] in {"Index Scan", "Index Only Scan"}]
        assert scan["Actual Rows"] <= 21, (url, scan["Actual Rows"])
    assert len(client.get(f"/users?limit=20&cursor={deep_cursor}").get_json()["items"]) == 20


def test_bad_limit_or_cursor_is_422(client: Any) -> None:
    bad = ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit=1e3", "limit=%C2%B2", "limit=" + "9" * 5000]
    # Only what the cursor's schema allows (issue 32): not empty, and base64url's own alphabet.
    cursors = ["cursor=nope", "cursor=" + "A" * 40, "cursor=", "cursor=" + "A" * 20 + "%2B%2F"]
    for query in (*bad, *cursors):
        response = client.get(f"/users?{query}")
        assert response.status_code == 422, query
        field = query.split("=")[0]
        assert [e["field"] for e in response.get_json()["errors"]] == [field]
    assert len(client.get("/users").get_json()["items"]) == 0
    assert client.get("/users?limit=100").status_code == 200


# -- cache --------------------------------------------------------------------------------------


def test_cache_aside_and_read_your_writes(client: Any) -> None:
    user = _create(client)
    path = f"/users/{user['id']}"
    assert client.get(path).headers["X-Cache"] == "MISS"
    assert client.get(path).headers["X-Cache"] == "HIT"
    client.patch(path, json={"name": "Fresh"})
    after_write = client.get(path)
    assert after_write.headers["X-Cache"] == "MISS"
    assert after_write.get_json()["name"] == "Fresh"

    assert client.get("/users").headers["X-Cache"] == "MISS"
    assert client.get("/users").headers["X-Cache"] == "HIT"
    second = _create(client, "Second", "second@example.com")
    listed = client.get("/users")
    assert listed.headers["X-Cache"] == "MISS"
    assert second["id"] in [u["id"] for u in listed.get_json()["items"]]
    client.delete(f"/users/{second['id']}")
    assert second["id"] not in [u["id"] for u in client.get("/users").get_json()["items"]]
    assert client.get(f"/users/{second['id']}").status_code == 404


def test_read_your_writes_on_cached_pages_and_cached_users(client: Any) -> None:
    """Every write retires what was cached before it: a renamed user in a cached list page (any
    limit, any cursor), a deleted user that was cached on its own and in a page."""
    first = _create(client, "First", "first@example.com")
    second = _create(client, "Second", "second@example.com")
    path = f"/users/{first['id']}"
    urls = (
        "/users",
        "/users?limit=1",
        f"/users?limit=1&cursor={client.get('/users?limit=1').get_json()['next_cursor']}",
    )
    for url in (path, *urls):
        client.get(url)
        assert client.get(url).headers["X-Cache"] == "HIT", url

    assert client.patch(path, json={"name": "Renamed"}).status_code == 200
    for url in urls:
        page = client.get(url)
        assert page.headers["X-Cache"] == "MISS", url
        names = {u["id"]: u["name"] for u in page.get_json()["items"]}
        assert names.get(first["id"], "Renamed") == "Renamed", url
    assert "Renamed" in [u["name"] for u in client.get("/users").get_json()["items"]]

    for url in (path, *urls):
        client.get(url)
        assert client.get(url).headers["X-Cache"] == "HIT", url
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404
    assert [u["id"] for u in client.get("/users").get_json()["items"]] == [second["id"]]


def test_cache_entries_have_the_configured_ttl(client: Any, app: Flask) -> None:
    user = _create(client)
    client.get(f"/users/{user['id']}")
    client.get("/users?limit=5")
    redis = common.of(app).redis
    ttl = common.of(app).settings.cache_ttl_seconds
    for key in (f"api:users:all:{user['id']}", "api:users:pages:all:5:"):
        assert 0 < redis.ttl(key) <= ttl, key


def test_cache_clear_command(client: Any, app: Flask) -> None:
    user = _create(client)
    client.get(f"/users/{user['id']}")
    client.get("/users")
    result = app.test_cli_runner().invoke(args=["cache-clear"])
    assert result.exit_code == 0
    assert "cache cleared" in result.output
    assert client.get(f"/users/{user['id']}").headers["X-Cache"] == "MISS"
    assert client.get("/users").headers["X-Cache"] == "MISS"


def test_cache_ttl_zero_reads_postgres_but_still_invalidates(
    client: Any, make_api: Callable[..., Flask], authed: Callable[..., Any]
) -> None:
    user = _create(client)
    path = f"/users/{user['id']}"
    client.get(path)
    assert client.get(path).headers["X-Cache"] == "HIT"  # cached by the caching replica

    uncached = authed(client.account, make_api(cache_ttl_seconds=0))
    for _ in range(2):
        assert uncached.get(path).headers["X-Cache"] == "MISS"
        assert uncached.get("/users").headers["X-Cache"] == "MISS"
    changed = uncached.patch(path, json={"name": "Changed elsewhere"})
    assert changed.status_code == 200
    after = client.get(path)  # the caching replica must not serve the old copy
    assert after.headers["X-Cache"] == "MISS"
    assert after.get_json()["name"] == "Changed elsewhere"


def test_a_write_through_one_replica_is_read_by_the_other_at_once(
    client: Any, make_api: Callable[..., Flask], authed: Callable[..., Any]
) -> None:
    """Both replicas cache; a write through either is read through the other at once, and cached again."""
    other = authed(client.account, make_api())
    user = _create(client)
    path = f"/users/{user['id']}"
    for replica in (client, other):
        replica.get(path)
        assert replica.get(path).headers["X-Cache"] == "HIT"
    for n in range(30):
        writer, reader = (client, other) if n % 2 else (other, client)
        assert writer.patch(path, json={"name": f"Name {n}"}).status_code == 200
        fresh = reader.get(path)
        assert fresh.get_json()["name"] == f"Name {n}", f"write {n} read stale from the other replica"
        assert reader.get(path).headers["X-Cache"] == "HIT"  # and cached again


def test_a_read_that_raced_a_write_never_caches_the_old_row(client: Any, app: Flask) -> None:
    """A miss reads the row, then a write commits and invalidates, then the miss fills the cache
    with what it read: that document must never be served."""
    user = _create(client)
    path = f"/users/{user['id']}"
    engine = common.of(app).engine
    raced: list[bool] = []

    def write_after_the_read(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not raced and statement.lstrip().upper().startswith("SELECT") and "api.users" in statement:
            raced.append(True)
            writer = threading.Thread(target=lambda: client.patch(path, json={"name": "Written meanwhile"}))
            writer.start()
            writer.join()

    event.listen(engine, "after_cursor_execute", write_after_the_read)
    try:
        stale = client.get(path)
    finally:
        event.remove(engine, "after_cursor_execute", write_after_the_read)
    assert raced
    assert stale.get_json()["name"] == "Ada"  # read before the write committed: fine, once
    after = client.get(path)
    assert after.get_json()["name"] == "Written meanwhile"
    assert after.headers["X-Cache"] == "MISS"


def test_redis_down_serves_from_postgres_and_recovers(
    make_api: Callable[..., Flask],
    redis_container: object,
    sign_up: Callable[..., Any],
    tcp_proxy: Callable[..., object],
    app: Flask,
    authed: Callable[..., Any],
) -> None:
    host = redis_container.get_container_host_ip()  # type: ignore[attr-defined]
    proxy = tcp_proxy((host, int(redis_container.get_exposed_port(6379))))  # type: ignore[attr-defined]
    flaky = make_api(redis_url=f"redis://127.0.0.1:{proxy.port}/0")  # type: ignore[attr-defined]
    client = authed(sign_up("redisdown@example.com"), flaky)
    user = _create(client)
    path = f"/users/{user['id']}"
    client.get(path)
    assert client.get(path).headers["X-Cache"] == "HIT"

    proxy.cut()  # type: ignore[attr-defined]
    for _ in range(5):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["X-Cache"] == "MISS"
    written = client.patch(path, json={"name": "Written while Redis was down"})
    assert written.status_code == 200
    second = _create(client, "Also", "also@example.com")
    assert client.get("/users").status_code == 200

    proxy.restore()  # type: ignore[attr-defined]
    time.sleep(BREAKER_PAUSE_SECONDS + 0.2)  # the breaker lets Redis be tried again
    # The invalidation missed during the outage retires the whole cache: no stale read of the old name.
    assert client.get(path).get_json()["name"] == "Written while Redis was down"
    assert client.get(path).headers["X-Cache"] == "HIT"
    assert second["id"] in [u["id"] for u in client.get("/users").get_json()["items"]]


def test_postgres_down_is_503_and_recovers(
    make_api: Callable[..., Flask],
    postgres_address: tuple[str, int],
    sign_up: Callable[..., Any],
    tcp_proxy: Callable[..., object],
    app: Flask,
    authed: Callable[..., Any],
) -> None:
    proxy = tcp_proxy(postgres_address)
    url = f"postgresql://api@127.0.0.1:{proxy.port}/wharf"  # type: ignore[attr-defined]
    flaky = make_api(database_url=url)
    client = authed(sign_up("pgdown@example.com"), flaky)
    cached = _create(client)
    client.get(f"/users/{cached['id']}")

    proxy.cut()  # type: ignore[attr-defined]
    started = time.monotonic()
    response = client.post("/users", json={"name": "B", "email": "b@example.com"})
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"]
    assert client.get(f"/users/{uuid.uuid4()}").status_code == 503
    assert client.get(f"/users/{cached['id']}").status_code == 200  # served from the cache
    assert time.monotonic() - started < 30  # bounded by the configured timeouts, not hung

    proxy.restore()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while client.post("/users", json={"name": "B", "email": "b@example.com"}).status_code != 201:
        assert time.monotonic() < deadline, "did not recover within 10 s"
        time.sleep(0.2)


def test_postgres_going_away_after_a_read_keeps_the_answer_and_drops_the_connection(
    make_api: Callable[..., Flask], app: Flask, sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    """Postgres stops between a request's last query and its end (as during `docker compose stop
    postgres`): the rollback at teardown fails, which must neither replace the finished answer
    with a bare 500 nor leave the dead connection checked out of the pool."""
    cut = make_api(db_pool_size=1, db_max_overflow=0)
    client = authed(sign_up("teardown@example.com"), cut)
    _create(client)
    engine = common.of(cut).engine
    terminated: list[int] = []

    def terminate_after_the_read(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not terminated and statement.lstrip().upper().startswith("SELECT") and "api.users" in statement:
            terminated.append(cursor.connection.get_backend_pid())
            with common.of(app).engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": terminated[0]})

    event.listen(engine, "after_cursor_execute", terminate_after_the_read)
    try:
        response = client.get("/users?limit=5")
    finally:
        event.remove(engine, "after_cursor_execute", terminate_after_the_read)
    assert terminated, "the list query never ran"
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(response.get_json()["items"]) == 1
    assert engine.pool.checkedout() == 0
    assert client.post("/users", json={"name": "B", "email": "b@example.com"}).status_code == 201  # pool of one


class _Kept(logging.Handler):
    def __init__(self, kept: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.kept = kept

    def emit(self, record: logging.LogRecord) -> None:
        self.kept.append(record.getMessage())


@pytest.fixture
def db_warnings() -> Iterator[list[str]]:
    """The warnings wharf_common.db logs during the test (the apps' logging set-up replaces pytest's handler)."""
    kept: list[str] = []
    handler, logger = _Kept(kept), logging.getLogger("wharf_common.db")
    logger.addHandler(handler)
    yield kept
    logger.removeHandler(handler)


def _backend_pid(single: Flask) -> int:
    """The backend of the one pooled connection of ``single`` (a pool of one)."""
    with single.test_request_context():
        return autocommit_connection().connection.dbapi_connection.get_backend_pid()  # type: ignore[union-attr]


def _terminate(app: Flask, pid: int) -> None:
    """End a backend as a Postgres restart or an administrator would; it is gone when this returns."""
    with common.of(app).engine.connect() as other:
        assert other.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})


@pytest.mark.parametrize("operation", ["create", "create with an Idempotency-Key", "patch", "delete", "read", "list"])
def test_a_request_whose_pooled_connection_died_is_answered_as_usual_and_writes_once(
    make_api: Callable[..., Flask],
    app: Flask,
    sign_up: Callable[..., Any],
    authed: Callable[..., Any],
    operation: str,
    db_warnings: list[str],
) -> None:
    """No ping at checkout: the request's first statement finds the dead connection, and its unit of
    work runs again on a new one (wharf_common.db). A write answers as usual and is made once."""
    single = make_api(db_pool_size=1, db_max_overflow=0)
    client = authed(sign_up("deadpool@example.com"), single)
    user = _create(client)
    path = f"/users/{user['id']}"
    dead = _backend_pid(single)
    _terminate(app, dead)

    if operation.startswith("create"):
        headers = {"Idempotency-Key": "after-the-death"} if "Idempotency" in operation else {}
        response = client.post("/users", json={"name": "B", "email": "b@example.com"}, headers=headers)
        assert response.status_code == 201, response.get_json()
    elif operation == "patch":
        response = client.patch(path, json={"name": "Changed"})
        assert response.status_code == 200, response.get_json()
        assert client.get(path).get_json()["name"] == "Changed"
    elif operation == "delete":
        assert client.delete(path).status_code == 204
        assert client.get(path).status_code == 404
    elif operation == "read":
        assert client.get(path).get_json() == user
    else:
        assert [u["id"] for u in client.get("/users").get_json()["items"]] == [user["id"]]
    assert _count_users(app) == {"create": 2, "delete": 0}.get(operation.split()[0], 1)
    # Found dead by the request's own first statement (no ping), then run again: one log line.
    assert [message.split(":")[0] for message in db_warnings] == [
        "the database connection was dead" if operation in ("read", "list") else "a pooled database connection was dead"
    ]
    assert _backend_pid(single) != dead
    assert common.of(single).engine.pool.checkedout() == 0


def test_a_write_whose_connection_dies_after_its_first_statement_is_not_run_again(
    make_api: Callable[..., Flask], app: Flask, sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    """Only a unit of work whose first statement found the connection dead runs again: once a
    statement has answered, a lost connection is a 503 (its transaction, never committed, is gone)."""
    single = make_api(db_pool_size=1, db_max_overflow=0)
    client = authed(sign_up("midway@example.com"), single)
    locks: list[int] = []

    def end_after_the_lock(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "pg_try_advisory_xact_lock" in statement:
            locks.append(cursor.connection.get_backend_pid())
            _terminate(app, locks[-1])

    engine = common.of(single).engine
    body, key = {"name": "B", "email": "b@example.com"}, {"Idempotency-Key": "k"}
    event.listen(engine, "after_cursor_execute", end_after_the_lock)
    try:
        response = client.post("/users", json=body, headers=key)
    finally:
        event.remove(engine, "after_cursor_execute", end_after_the_lock)
    assert response.status_code == 503, response.get_json()
    assert len(locks) == 1  # the lock was the first statement; what followed it was not tried again
    assert _count_users(app) == 0
    assert client.post("/users", json=body, headers=key).status_code == 201


@pytest.mark.timing
def test_redis_that_stops_answering_costs_one_short_timeout_per_back_off_pause(
    make_api: Callable[..., Flask],
    redis_container: Any,
    sign_up: Callable[..., Any],
    tcp_proxy: Callable[..., Any],
    authed: Callable[..., Any],
) -> None:
    """Redis accepts connections but answers nothing: copies in memory are served for at most
    CONFIRM_SECONDS, then reads come from Postgres, and a request waits for Redis at most one short
    socket timeout (and a retry), only now and then (the breaker's pauses)."""
    proxy = tcp_proxy((redis_container.get_container_host_ip(), int(redis_container.get_exposed_port(6379))))
    hung = make_api(redis_url=f"redis://127.0.0.1:{proxy.port}/0")
    client = authed(sign_up("redishung@example.com"), hung)
    user = _create(client)
    path = f"/users/{user['id']}"
    client.get(path)
    assert client.get(path).headers["X-Cache"] == "HIT"

    proxy.freeze()
    bound = 2 * SOCKET_TIMEOUT_SECONDS + 0.5  # one try and one retry
    durations = []
    hits_at = []
    started = time.monotonic()
    while time.monotonic() - started < BREAKER_PAUSE_SECONDS * 1.75:  # spans one pause
        before = time.monotonic()
        response = client.get(path)
        durations.append(time.monotonic() - before)
        assert response.status_code == 200
        if response.headers["X-Cache"] == "HIT":
            hits_at.append(before - started)
        time.sleep(0.02)
    assert all(at < CONFIRM_SECONDS for at in hits_at), hits_at  # memory is trusted no longer than this
    assert max(durations) < bound
    waited = [d for d in durations if d >= SOCKET_TIMEOUT_SECONDS * 0.8]
    assert 1 <= len(waited) <= 3, (len(waited), len(durations))  # not one timeout per request
    before = time.monotonic()
    assert client.patch(path, json={"name": "Written while Redis hung"}).status_code == 200
    assert time.monotonic() - before < bound

    proxy.restore()
    time.sleep(BREAKER_PAUSE_SECONDS + 0.2)
    assert client.get(path).get_json()["name"] == "Written while Redis hung"
    assert client.get(path).headers["X-Cache"] == "HIT"


@pytest.mark.timing
def test_postgres_that_stops_answering_is_503_within_the_timeouts_and_recovers(
    make_api: Callable[..., Flask],
    postgres_address: tuple[str, int],
    sign_up: Callable[..., Any],
    tcp_proxy: Callable[..., Any],
    authed: Callable[..., Any],
) -> None:
    """A hung server (connections open, nothing answered) enforces no statement_timeout: the
    client abandons a call DB_STATEMENT_TIMEOUT_MS + CLIENT_GRACE_SECONDS after sending it, then a
    new connection fails within CONNECT_TIMEOUT_SECONDS: 503, never a request that waits for TCP."""
    proxy = tcp_proxy(postgres_address)
    hung = make_api(database_url=f"postgresql://api@127.0.0.1:{proxy.port}/wharf", db_statement_timeout_ms=500)
    client = authed(sign_up("pghung@example.com"), hung)
    cached = _create(client)
    client.get(f"/users/{cached['id']}")

    proxy.freeze()
    bound = 0.5 + CLIENT_GRACE_SECONDS + CONNECT_TIMEOUT_SECONDS + 1.5  # abandoned call, failed reconnect, slack
    for method, path, body in (
        ("POST", "/users", {"name": "B", "email": "b@example.com"}),
        ("GET", f"/users/{uuid.uuid4()}", None),
        ("GET", "/users?limit=3", None),
    ):
        started = time.monotonic()
        response = client.open(method, path, json=body)
        elapsed = time.monotonic() - started
        assert response.status_code == 503, (method, path, response.status_code)
        assert response.mimetype == "application/problem+json"
        assert response.headers["Retry-After"]
        assert elapsed < bound, (method, path, elapsed)
    assert client.get(f"/users/{cached['id']}").status_code == 200  # served from the cache

    proxy.restore()
    deadline = time.monotonic() + 10
    while client.post("/users", json={"name": "B", "email": "b@example.com"}).status_code != 201:
        assert time.monotonic() < deadline, "did not recover within 10 s"
        time.sleep(0.2)


@pytest.mark.timing
def test_a_statement_past_its_timeout_is_503_not_a_hang(
    make_api: Callable[..., Flask], app: Flask, sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    impatient = make_api(db_statement_timeout_ms=300)
    client = authed(sign_up("impatient@example.com"), impatient)
    user = _create(client)
    path = f"/users/{user['id']}"
    with common.of(app).engine.connect() as holder:  # another transaction holds the row
        holder.execute(text("SELECT 1 FROM api.users WHERE id = :id FOR UPDATE"), {"id": user["id"]})
        started = time.monotonic()
        blocked = client.patch(path, json={"name": "Blocked"})
        elapsed = time.monotonic() - started
        holder.rollback()
    assert blocked.status_code == 503
    assert blocked.mimetype == "application/problem+json"
    assert blocked.headers["Retry-After"]
    assert elapsed < 0.3 + 1.5
    assert client.patch(path, json={"name": "Unblocked"}).status_code == 200


def test_pool_and_timeouts_come_from_the_settings(make_api: Callable[..., Flask]) -> None:
    configured = make_api(db_pool_size=3, db_max_overflow=2, db_statement_timeout_ms=1234)
    pool = common.of(configured).engine.pool
    assert (pool.size(), pool.overflow() + pool.size()) == (3, 0)  # type: ignore[attr-defined]
    with configured.app_context():
        assert get_session().execute(text("SHOW statement_timeout")).scalar() == "1234ms"


def test_auth_unreachable_alone_keeps_authentication_fresh_through_the_channel(
    make_api: Callable[..., Flask],
    auth_url: str,
    redis_container: Any,
    sign_up: Callable[..., Any],
    tcp_proxy: Callable[..., Any],
    authed: Callable[..., Any],
) -> None:
    """Past the staleness bound with auth unreachable (no re-sync), reads still answer while the
    revocation channel stays subscribed; with Redis cut as well, the worker fails closed."""
    host, port = auth_url.removeprefix("http://").split(":")
    auth = tcp_proxy((host, int(port)))
    rd = tcp_proxy((redis_container.get_container_host_ip(), int(redis_container.get_exposed_port(6379))))
    app = make_api(
        auth_url=f"http://127.0.0.1:{auth.port}",
        redis_url=f"redis://127.0.0.1:{rd.port}/0",
        revocation_max_staleness_seconds=1.0,
    )
    client = authed(sign_up("channel@example.com"), app)
    user = _create(client)
    path = f"/users/{user['id']}"
    client.get(path)
    revocations = authn.authenticator(app).revocations
    deadline = time.monotonic() + 5
    # The listener is connected, and the re-sync that follows its subscription is done.
    while not (revocations._subscribed_at or float("inf")) <= (revocations._synced_at or 0):  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)

    auth.cut()
    while (revocations.age() or 0) <= 1.0:  # type: ignore[union-attr]  # past the staleness bound
        assert time.monotonic() < deadline + 5
        time.sleep(0.05)
    assert client.get(path).status_code == 200
    rd.cut()
    deadline = time.monotonic() + 5
    while client.get(path).status_code != 503:
        assert time.monotonic() < deadline, "did not fail closed with both auth and Redis unreachable"
        time.sleep(0.1)


def test_connections_use_utc(app: Flask) -> None:
    with app.app_context():
        assert get_session().execute(text("SHOW timezone")).scalar() == "UTC"


# -- idempotency --------------------------------------------------------------------------------


def test_idempotent_create_replays_and_refuses_another_body(client: Any, app: Flask) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/users", json={"name": "Ada", "email": "ada@example.com"}, headers=headers)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    again = client.post(
        "/users", data='{ "email":"ada@example.com",  "name":"Ada"}', headers=headers, content_type="application/json"
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Location"] == first.headers["Location"]
    assert _count_users(app) == 1

    other_body = client.post("/users", json={"name": "Eve", "email": "eve@example.com"}, headers=headers)
    assert other_body.status_code == 422
    assert other_body.get_json()["errors"][0]["field"] == "Idempotency-Key"
    assert (
        client.post("/users", json={"name": "A", "email": "x@example.com"}, headers={"Idempotency-Key": ""}).status_code
        == 422
    )
    assert _count_users(app) == 1


def test_idempotency_keys_are_per_account(
    client: Any, app: Flask, sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    other = authed(sign_up("other@example.com"))
    _create(client, headers={"Idempotency-Key": "shared"})
    mine = other.post(
        "/users", json={"name": "Other", "email": "other-user@example.com"}, headers={"Idempotency-Key": "shared"}
    )
    assert mine.status_code == 201
    assert "Idempotent-Replayed" not in mine.headers


def test_same_key_in_flight_is_409(client: Any, app: Flask) -> None:
    engine = common.of(app).engine
    with engine.connect() as holder:  # plays the first request, still running
        holder.execute(select(func.pg_advisory_lock(_lock_id(client.account.id, "busy"))))
        response = client.post(
            "/users", json={"name": "A", "email": "a@example.com"}, headers={"Idempotency-Key": "busy"}
        )
        holder.execute(select(func.pg_advisory_unlock(_lock_id(client.account.id, "busy"))))
    assert response.status_code == 409
    assert response.get_json()["type"] == "https://wharf.dev/problems/idempotency-key-in-use"
    assert _count_users(app) == 0
    assert (
        client.post(
            "/users", json={"name": "A", "email": "a@example.com"}, headers={"Idempotency-Key": "busy"}
        ).status_code
        == 201
    )


def test_same_key_while_the_first_request_is_still_running_is_409(
    client: Any, app: Flask, authed: Callable[..., Any]
) -> None:
    """A real first request, held up inside its transaction (another session locks the key table):
    a retry meanwhile is 409 at once; once the first finishes, a retry replays its response."""
    body = {"name": "Slow", "email": "slow@example.com"}
    headers = {"Idempotency-Key": "slow"}
    engine = common.of(app).engine
    waiting = text("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'api.idempotency_keys'::regclass")
    with engine.connect() as holder, ThreadPoolExecutor(1) as pool:
        holder.execute(text("LOCK TABLE api.idempotency_keys IN ACCESS EXCLUSIVE MODE"))
        first = pool.submit(lambda: authed(client.account).post("/users", json=body, headers=headers))
        deadline = time.monotonic() + 3
        with engine.connect() as observer:
            while observer.execute(waiting).scalar() == 0:
                assert time.monotonic() < deadline, "the first request never reached the key table"
                time.sleep(0.02)
        retry = client.post("/users", json=body, headers=headers)
        holder.rollback()
        original = first.result(timeout=10)
    assert retry.status_code == 409
    assert retry.get_json()["type"] == "https://wharf.dev/problems/idempotency-key-in-use"
    assert original.status_code == 201
    assert "Idempotent-Replayed" not in original.headers
    replayed = client.post("/users", json=body, headers=headers)
    assert replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.get_data() == original.get_data()
    assert _count_users(app) == 1


def test_concurrent_requests_with_one_key_create_one_row(app: Flask, client: Any, authed: Callable[..., Any]) -> None:
    barrier = threading.Barrier(8)

    def attempt(_: int) -> tuple[int, bytes]:
        local = authed(client.account)
        barrier.wait()
        body = {"name": "Once", "email": "once@example.com"}
        response = local.post("/users", json=body, headers={"Idempotency-Key": "race"})
        return response.status_code, response.get_data()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    assert len({body for status, body in results if status == 201}) == 1  # replays are the original
    assert _count_users(app) == 1


def test_idempotency_keys_expire(client: Any, app: Flask) -> None:
    _create(client, headers={"Idempotency-Key": "old"})
    with app.app_context():
        session = get_session()
        session.execute(text("UPDATE api.idempotency_keys SET created_at = now() - interval '23 hours'"))
        session.commit()
    kept = client.post("/users", json={"name": "Ada", "email": "ada@example.com"}, headers={"Idempotency-Key": "old"})
    assert kept.headers["Idempotent-Replayed"] == "true"  # still within 24 h
    with app.app_context():
        session = get_session()
        session.execute(text("UPDATE api.idempotency_keys SET created_at = now() - interval '25 hours'"))
        session.execute(text("DELETE FROM api.users"))
        session.commit()
    fresh = client.post("/users", json={"name": "Ada", "email": "ada@example.com"}, headers={"Idempotency-Key": "old"})
    assert fresh.status_code == 201
    assert "Idempotent-Replayed" not in fresh.headers
    assert _count_users(app) == 1


# -- the OpenAPI document -----------------------------------------------------------------------


def test_openapi_document_declares_every_status(anonymous: FlaskClient) -> None:
    from openapi_spec_validator import validate

    document = anonymous.get("/openapi.json").get_json()
    validate(document)
    operations = {(path, method): op for path, item in document["paths"].items() for method, op in item.items()}
    declared = {key: set(op["responses"]) for key, op in operations.items()}
    assert declared[("/users", "get")] >= {"200", "401", "422", "503"}
    assert declared[("/users", "post")] >= {"201", "400", "401", "409", "413", "415", "422", "503"}
    assert declared[("/users/{user_id}", "get")] >= {"200", "304", "401", "404", "503"}
    assert declared[("/users/{user_id}", "patch")] >= {
        "200",
        "400",
        "401",
        "403",
        "404",
        "409",
        "412",
        "415",
        "422",
        "428",
    }
    assert declared[("/users/{user_id}", "delete")] >= {"204", "401", "403", "404", "412", "428"}
    # What the edge or any request can get, on every operation, declared once (issue 22).
    edge = {"400", "404", "405", "413", "414", "429", "431", "500", "502", "503", "504"}
    assert all(statuses >= edge for statuses in declared.values())
    shared = document["components"]["responses"]
    assert document["paths"]["/users"]["get"]["responses"]["502"] == {"$ref": "#/components/responses/BadGateway"}
    assert shared["TooManyRequests"]["headers"]["Retry-After"] == {"$ref": "#/components/headers/Retry-After"}
    assert document["components"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert all(op["security"] == [{"bearerAuth": []}] for op in operations.values())
    assert "UserCreate" in document["components"]["schemas"]


def test_openapi_document_types_headers_and_path_parameters(anonymous: FlaskClient) -> None:
    document = anonymous.get("/openapi.json").get_json()
    item = document["paths"]["/users/{user_id}"]
    for method in ("get", "patch", "delete"):
        (user_id,) = [p for p in item[method]["parameters"] if p["in"] == "path"]
        assert user_id["schema"] == {"type": "string", "format": "uuid"}
    read = item["get"]["responses"]["200"]["headers"]
    assert set(read) == {"X-Request-ID", "ETag", "X-Cache"}
    created = document["paths"]["/users"]["post"]["responses"]["201"]["headers"]
    assert {"Location", "ETag", "X-Request-ID"} <= set(created)
    headers = document["components"]["headers"]
    assert headers["X-Request-ID"]["required"] is True
    assert headers["X-Cache"]["schema"]["enum"] == ["HIT", "MISS"]
    # Every response, the shared ones included, declares the request id.
    responses = [r for op in item.values() for r in op["responses"].values() if "$ref" not in r]
    assert all("X-Request-ID" in r["headers"] for r in [*responses, *document["components"]["responses"].values()])
    # A malformed id is answered as the document says: 404 problem+json.
    malformed = anonymous.get("/users/not-a-uuid")
    assert malformed.status_code == 404
    assert malformed.mimetype == "application/problem+json"


def test_openapi_schemas_say_exactly_what_is_accepted(client: Any) -> None:
    """A merge patch member may be left out but never be null: the schema says so, and the server
    agrees (issue 22)."""
    document = client.get("/openapi.json").get_json()
    patch = document["components"]["schemas"]["UserPatch"]
    assert "required" not in patch
    for name, schema in patch["properties"].items():
        assert "null" not in json.dumps(schema), name
        assert "default" not in schema, name
    problem = document["components"]["schemas"]["ProblemDocument"]["properties"]
    assert "null" not in json.dumps(problem)
    # The email's schema says what the validator enforces (issue 32): these were valid by it before.
    email = document["components"]["schemas"]["UserCreate"]["properties"]["email"]
    assert (email["format"], email["maxLength"], email["pattern"]) == ("idn-email", 254, EMAIL_PATTERN)
    for address in ("", " ada@example.com", "ada@example.test"):
        assert client.post("/users", json={"name": "Ada", "email": address}).status_code == 422, address
    user = _create(client)
    refused = client.patch(f"/users/{user['id']}", json={"name": None})
    assert refused.status_code == 422
    assert refused.get_json()["errors"] == [{"field": "name", "message": "may not be null"}]


def test_openapi_servers_name_the_public_url_when_set(make_api: Callable[..., Flask]) -> None:
    relative = make_api().test_client().get("/openapi.json", headers={"X-Forwarded-Prefix": "/api"})
    assert [s["url"] for s in relative.get_json()["servers"]] == ["/api"]
    public = make_api(edge_public_url="https://wharf.example.com").test_client()
    document = public.get("/openapi.json", headers={"X-Forwarded-Prefix": "/api"}).get_json()
    assert [s["url"] for s in document["servers"]] == ["https://wharf.example.com/api", "/api"]


# -- auth's keys --------------------------------------------------------------------------------


def test_cached_keys_keep_working_while_auth_is_down(
    auth_url: str,
    make_api: Callable[..., Flask],
    tcp_proxy: Callable[..., Any],
    sign_up: Callable[..., Any],
    authed: Callable[..., Any],
) -> None:
    host, port = auth_url.removeprefix("http://").split(":")
    proxy = tcp_proxy((host, int(port)))
    app = make_api(auth_url=f"http://127.0.0.1:{proxy.port}")
    client = authed(sign_up("keys@example.com"), app)
    assert client.get("/users").status_code == 200
    proxy.cut()
    assert client.get("/users").status_code == 200  # the known key (and the subscribed channel) still serve


def test_no_keys_yet_is_503_not_401(
    make_api: Callable[..., Flask], sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    app = make_api(auth_url="http://127.0.0.1:9")
    client = authed(sign_up("nokeys@example.com"), app)
    for _ in range(2):  # the second call comes before a refetch is allowed: still our fault, not a 401
        response = client.get("/users")
        assert response.status_code == 503
        assert response.headers["Retry-After"]


# -- metrics ------------------------------------------------------------------------------------


def test_requests_cache_and_tokens_are_counted(client: Any, anonymous: FlaskClient) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    user = _create(client)
    route = {"method": "GET", "route": "/users/<uuid:user_id>", "status": "200"}
    before = {
        "requests": sample("wharf_http_request_duration_seconds_count", **route),
        "hits": sample("wharf_cache_lookups_total", kind="item", result="hit"),
        "valid": sample("wharf_token_verifications_total", outcome="valid"),
        "invalid": sample("wharf_token_verifications_total", outcome="invalid"),
    }
    states = [client.get(f"/users/{user['id']}").headers["X-Cache"] for _ in range(2)]
    assert states == ["MISS", "HIT"]
    anonymous.get("/users", headers={"Authorization": "Bearer junk"})
    assert sample("wharf_http_request_duration_seconds_count", **route) == before["requests"] + 2
    assert sample("wharf_cache_lookups_total", kind="item", result="hit") == before["hits"] + 1
    assert sample("wharf_token_verifications_total", outcome="valid") == before["valid"] + 2
    assert sample("wharf_token_verifications_total", outcome="invalid") == before["invalid"] + 1
    assert sample("wharf_db_pool_connections_open") >= 1
