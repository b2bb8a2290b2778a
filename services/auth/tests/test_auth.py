from __future__ import annotations

import json
import logging
import re
import socket
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from wharf_auth import extensions
from wharf_common import extensions as common
from wharf_common.db import get_session

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a completely different passphrase"


def register(client: FlaskClient, email: str = "ada@example.com", password: str = PASSWORD) -> dict:
    response = client.post("/register", json={"email": email, "password": password, "name": "Ada"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def login(client: FlaskClient, email: str = "ada@example.com", password: str = PASSWORD) -> TestResponse:
    return client.post("/login", json={"email": email, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def password_hash(app: Flask, email: str = "ada@example.com") -> str:
    with app.app_context():
        return (
            get_session()
            .execute(text("SELECT password_hash FROM auth.accounts WHERE email = :e"), {"e": email})
            .scalar_one()
        )


# --- register -------------------------------------------------------------------------------


def test_register_creates_account(client: FlaskClient) -> None:
    # An address is taken as sent, as its schema's pattern and format say (issue 32); a name is trimmed.
    padded = client.post("/register", json={"email": " ada@example.com", "password": PASSWORD, "name": "Ada"})
    assert padded.status_code == 422
    assert [e["field"] for e in padded.get_json()["errors"]] == ["email"]
    response = client.post(
        "/register", json={"email": "Ada@Example.COM", "password": PASSWORD, "name": " Ada Lovelace "}
    )
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "email", "name", "created_at"}
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada Lovelace"


def test_register_duplicate_is_409(client: FlaskClient) -> None:
    register(client)
    response = client.post("/register", json={"email": "ADA@example.com", "password": PASSWORD, "name": "B"})
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"


def test_register_requires_json(client: FlaskClient) -> None:
    assert client.post("/register", data="x", content_type="text/plain").status_code == 415
    assert client.post("/register", data="{", content_type="application/json").status_code == 400


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("a" * 3 + "bcdefghijk9", "at least 15"),  # 14 characters
        ("x9" * 128 + "y", "at most 256"),
        ("MailCreated5240", "common"),
        ("aaaaaaaaaaaaaaaa", "repetitive"),
        ("abcabcabcabcabcabc", "repetitive"),
        ("123456789012345", "sequence"),
        ("abcdefghijklmnop", "sequence"),
        ("qwertyuiopasdfgh", "sequence"),
        ("ada.lovelace@example.com", "email"),
        ("ada.lovelace2024!!", "email"),
        ("wharfwharfwharf123", "email"),
    ],
)
def test_register_rejects_weak_password_with_reason(client: FlaskClient, password: str, reason: str) -> None:
    response = client.post("/register", json={"email": "ada.lovelace@example.com", "password": password, "name": "Ada"})
    assert response.status_code == 422, password
    errors = response.get_json()["errors"]
    assert [e["field"] for e in errors] == ["password"]
    assert reason in errors[0]["message"]


@pytest.mark.parametrize(
    "password",
    [
        "fifteen chars!!",
        "ünïcödé pässwörd ✓ with spaces",
        "x" * 8 + "Lq3 vR9 #kT" + "p" * 2 + "".join(chr(0x41 + (i * 7) % 26) for i in range(43)),  # 64 chars
        "".join(chr(0x21 + (i * 37) % 94) for i in range(256)),  # 256 chars, the maximum
    ],
)
def test_register_accepts_long_passwords(client: FlaskClient, password: str) -> None:
    assert len(password) in {15, 30, 64, 256}
    response = client.post("/register", json={"email": "ada@example.com", "password": password, "name": "Ada"})
    assert response.status_code == 201, response.get_json()
    assert login(client, password=password).status_code == 200
    # never truncated: a prefix is a different password
    assert login(client, password=password[:-1]).status_code == 401


def test_bundled_blocklist_is_large_and_case_insensitive(client: FlaskClient) -> None:
    from wharf_auth.passwords import blocklist

    assert len(blocklist()) >= 10_000
    long_enough = sorted(p for p in blocklist() if len(p) >= 15)
    assert long_enough
    for password in long_enough:
        for variant in (password, password.upper(), password.title()):
            response = client.post("/register", json={"email": "ada@example.com", "password": variant, "name": "A"})
            assert response.status_code == 422, variant
            assert "common" in response.get_json()["errors"][0]["message"], variant


@pytest.mark.parametrize("name", ["A", "n" * 100])
def test_register_accepts_names_of_1_to_100_characters(client: FlaskClient, name: str) -> None:
    response = client.post("/register", json={"email": "ada@example.com", "password": PASSWORD, "name": name})
    assert response.status_code == 201
    assert response.get_json()["name"] == name


def test_control_characters_are_422_not_500(client: FlaskClient) -> None:
    body = {"email": "nul@example.com", "password": PASSWORD, "name": "a\u0000b"}
    assert client.post("/register", json=body).status_code == 422
    assert client.post("/login", json={"email": "a\u0000@example.com", "password": PASSWORD}).status_code == 422


def test_register_rejects_unknown_fields_and_bad_name(client: FlaskClient) -> None:
    response = client.post(
        "/register", json={"email": "ada@example.com", "password": PASSWORD, "name": "Ada", "roles": ["admin"]}
    )
    assert response.status_code == 422
    assert {e["field"] for e in response.get_json()["errors"]} == {"roles"}
    # nothing was created or assigned: the same email registers afterwards, as a plain user
    register(client)
    assert client.get("/me", headers=bearer(login(client).get_json()["access_token"])).get_json()["roles"] == ["user"]
    response = client.post("/register", json={"email": "not-an-email", "password": PASSWORD, "name": "   "})
    assert {e["field"] for e in response.get_json()["errors"]} == {"email", "name"}
    response = client.post("/register", json={"email": "ada@example.com", "password": PASSWORD, "name": "n" * 101})
    assert response.status_code == 422


def test_every_failing_field_is_listed_password_policy_included(client: FlaskClient) -> None:
    response = client.post(
        "/register", json={"email": "not-an-email", "password": "short", "name": "  ", "roles": ["admin"]}
    )
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert {e["field"] for e in errors} == {"email", "password", "name", "roles"}
    assert any(e["field"] == "password" and "at least 15" in e["message"] for e in errors)


def test_password_change_lists_the_policy_reason_with_other_failing_fields(client: FlaskClient) -> None:
    register(client)
    tokens = login(client).get_json()
    response = client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "aaaaaaaaaaaaaaaa", "roles": ["admin"]},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert {e["field"] for e in errors} == {"new_password", "roles"}
    assert any(e["field"] == "new_password" and "repetitive" in e["message"] for e in errors)


# --- hashing --------------------------------------------------------------------------------


def test_argon2id_hash_format(app: Flask, client: FlaskClient) -> None:
    register(client)
    stored = password_hash(app)
    assert stored.startswith("$argon2id$v=19$")
    params = dict(p.split("=") for p in stored.split("$")[3].split(","))
    assert int(params["m"]) >= 19456
    assert int(params["t"]) >= 2
    assert int(params["p"]) >= 1
    register(client, email="bob@example.com")  # the same password: another salt, another hash
    assert password_hash(app, "bob@example.com") != stored


@pytest.mark.parametrize("weaker", [{"argon2_memory_kib": 19455}, {"argon2_time_cost": 1}])
def test_weaker_argon2_parameters_are_refused(auth_settings_kwargs: dict[str, object], weaker: dict[str, int]) -> None:
    from pydantic import ValidationError

    from wharf_auth.settings import AuthSettings

    with pytest.raises(ValidationError):
        AuthSettings(**{**auth_settings_kwargs, **weaker})


def test_login_upgrades_outdated_hash(app: Flask, client: FlaskClient) -> None:
    register(client)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with app.app_context():
        session = get_session()
        session.execute(text("UPDATE auth.accounts SET password_hash = :h"), {"h": weak})
        session.commit()
    assert login(client).status_code == 200
    upgraded = password_hash(app)
    assert upgraded != weak
    assert ",t=2," in upgraded
    assert "m=19456" in upgraded


# --- login and lockout ----------------------------------------------------------------------


def test_login_returns_tokens(client: FlaskClient) -> None:
    register(client)
    response = login(client, email=" ADA@example.com")
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert len(body["refresh_token"]) >= 43
    assert response.headers["Cache-Control"] == "no-store"
    me = client.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert set(me.get_json()) == {"id", "email", "email_verified", "name", "roles"}
    assert me.get_json()["roles"] == ["user"]
    assert me.get_json()["email"] == "ada@example.com"
    # a refresh token is not an access token, and a token in the URL is never read
    assert client.get("/me", headers=bearer(body["refresh_token"])).status_code == 401
    assert client.get(f"/me?access_token={body['access_token']}").status_code == 401


def test_access_token_lifetime_is_configurable(make_app: Callable[..., Flask], app: Flask) -> None:
    import jwt as pyjwt

    client = make_app(access_token_ttl_seconds=60).test_client()
    register(client)
    body = login(client).get_json()
    assert body["expires_in"] == 60
    claims = pyjwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["nbf"] == 60


@pytest.mark.timing
def test_unknown_email_and_wrong_password_are_identical(client: FlaskClient) -> None:
    register(client)
    timings, bodies = [], []
    for email, password in (("nobody@example.com", PASSWORD), ("ada@example.com", "wrong password entirely")):
        start = time.perf_counter()
        response = login(client, email=email, password=password)
        timings.append(time.perf_counter() - start)
        assert response.status_code == 401
        body = response.get_json()
        body.pop("request_id", None)
        bodies.append(body)
    assert bodies[0] == bodies[1]
    # both paths run one Argon2 verification: same order of magnitude
    assert max(timings) < 5 * min(timings)


def test_a_failed_login_challenges_without_an_error_code(client: FlaskClient) -> None:
    """RFC 6750 section 3.1: invalid_token is about a presented access token; a sign-in presents none."""
    register(client)
    for email, password in (("ada@example.com", "wrong password entirely"), ("nobody@example.com", PASSWORD)):
        failed = login(client, email=email, password=password)
        assert failed.status_code == 401
        assert failed.headers["WWW-Authenticate"] == 'Bearer realm="wharf"'
    bad_token = client.get("/me", headers=bearer("not-a-token"))
    assert bad_token.headers["WWW-Authenticate"] == 'Bearer realm="wharf", error="invalid_token"'


def test_empty_answers_carry_no_content_type(client: FlaskClient) -> None:
    register(client)
    tokens = login(client).get_json()
    logout = client.post("/logout", headers=bearer(tokens["access_token"]))
    assert logout.status_code == 204
    assert "Content-Type" not in logout.headers
    options = client.options("/login")
    assert options.status_code == 200
    assert options.data == b""
    assert "Content-Type" not in options.headers
    assert "POST" in options.headers["Allow"]


@pytest.mark.timing
def test_unknown_email_and_wrong_password_take_the_same_median_time(make_app: Callable[..., Flask], app: Flask) -> None:
    client = make_app(login_max_failures=100, ip_max_failures=1000).test_client()
    register(client)
    timings: dict[str, list[float]] = {"unknown": [], "wrong": []}
    for _ in range(11):  # interleaved, so load from elsewhere on the machine hits both alike
        for kind, email in (("unknown", "nobody@example.com"), ("wrong", "ada@example.com")):
            start = time.perf_counter()
            assert login(client, email=email, password="wrong password entirely").status_code == 401
            timings[kind].append(time.perf_counter() - start)
    unknown, wrong = statistics.median(timings["unknown"]), statistics.median(timings["wrong"])
    assert max(unknown, wrong) < 1.5 * min(unknown, wrong), timings


def test_lockout_after_five_failures(client: FlaskClient) -> None:
    register(client)
    for _ in range(5):
        assert login(client, password="wrong password entirely").status_code == 401
    locked = login(client)
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 900
    assert login(client, password="wrong password entirely").status_code == 429
    # another account is not affected
    register(client, email="bob@example.com")
    assert login(client, email="bob@example.com").status_code == 200


def test_success_resets_failure_count(client: FlaskClient) -> None:
    register(client)
    for _ in range(4):
        assert login(client, password="wrong password entirely").status_code == 401
    assert login(client).status_code == 200
    for _ in range(4):
        assert login(client, password="wrong password entirely").status_code == 401
    assert login(client).status_code == 200


@pytest.mark.timing
def test_lockout_expires(make_app: Callable[..., Flask], app: Flask) -> None:
    """The window starts at the first failure: 3 s, so that two failed sign-ins (an Argon2
    verification each, slow on a busy machine) and the refused one fit in it; then the account is
    free again once the window has passed, which the test waits for rather than guesses."""
    short = make_app(login_window_seconds=3, login_max_failures=2).test_client()
    register(short)
    for _ in range(2):
        assert login(short, password="wrong password entirely").status_code == 401
    assert login(short).status_code == 429
    deadline = time.monotonic() + 3 + 10
    while (status := login(short).status_code) == 429:
        assert time.monotonic() < deadline, "still locked long after the window"
        time.sleep(0.1)
    assert status == 200


def test_per_ip_limit(make_app: Callable[..., Flask], app: Flask) -> None:
    client = make_app(ip_max_failures=3).test_client()
    register(client)
    for i in range(3):
        assert login(client, email=f"guess{i}@example.com").status_code == 401
    assert login(client).status_code == 429
    other_ip = client.post(
        "/login", json={"email": "ada@example.com", "password": PASSWORD}, environ_base={"REMOTE_ADDR": "10.9.8.7"}
    )
    assert other_ip.status_code == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_down_still_limits(make_app: Callable[..., Flask], app: Flask) -> None:
    down = make_app(redis_url=f"redis://127.0.0.1:{_closed_port()}/0").test_client()
    register(down)
    for _ in range(5):
        assert login(down, password="wrong password entirely").status_code == 401
    locked = login(down)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1
    # not everyone is locked out
    register(down, email="bob@example.com")
    assert login(down, email="bob@example.com").status_code == 200


def test_events_logged_without_secrets(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    register(client)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wharf.auth.events"):
        login(client, password="wrong password entirely")
        tokens = login(client).get_json()
    events = [r for r in caplog.records if r.name == "wharf.auth.events"]
    assert [r.event for r in events] == ["login_failure", "login_success"]
    assert len(events[0].email_hash) == 64
    assert events[1].account_id
    assert all(r.client_ip == "127.0.0.1" for r in events)
    text_logged = " ".join(str(vars(r)) for r in events)
    assert "wrong password" not in text_logged
    assert tokens["refresh_token"] not in text_logged
    assert "ada@example.com" not in text_logged


class JsonLines(logging.Handler):
    """The lines the service's JSON formatter writes for the records it sees (inside the request)."""

    def __init__(self) -> None:
        from wharf_common.logs import JsonFormatter

        super().__init__()
        self.setFormatter(JsonFormatter("auth"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_every_security_event_is_a_structured_line_without_secrets(make_app: Callable[..., Flask], app: Flask) -> None:
    """Login success, failure, lock, lockout, refresh, its retry, reuse detection and logout: account id or the
    email's hash, client IP, request id and a UTC timestamp; never a password, token or email."""
    client = make_app(login_max_failures=2).test_client()
    handler = JsonLines()
    logger = logging.getLogger("wharf.auth.events")
    logger.addHandler(handler)
    sent: list[str] = []
    secrets = [PASSWORD, "wrong password entirely", "ada@example.com"]

    def call(path: str, body: dict | None = None, token: str | None = None) -> TestResponse:
        request_id = f"audit-event-{len(sent):04d}"
        sent.append(request_id)
        headers = {"X-Request-ID": request_id, **(bearer(token) if token else {})}
        response = client.post(path, json=body, headers=headers)
        if response.is_json and "refresh_token" in response.get_json():
            secrets.extend([response.get_json()["refresh_token"], response.get_json()["access_token"]])
        return response

    try:
        register(client)
        credentials = {"email": "ada@example.com", "password": PASSWORD}
        first = call("/login", credentials).get_json()
        assert call("/refresh", {"refresh_token": first["refresh_token"]}).status_code == 200
        assert call("/refresh", {"refresh_token": first["refresh_token"]}).status_code == 200  # a retry
        age_refresh_tokens(app, 6)
        assert call("/refresh", {"refresh_token": first["refresh_token"]}).status_code == 401  # reuse
        assert call("/logout", token=call("/login", credentials).get_json()["access_token"]).status_code == 204
        for _ in range(2):
            assert call("/login", {**credentials, "password": "wrong password entirely"}).status_code == 401
        assert call("/login", credentials).status_code == 429
    finally:
        logger.removeHandler(handler)

    events = [line for line in handler.lines if line.get("event") != "register"]
    assert [e["event"] for e in events] == [
        "login_success",
        "refresh",
        "refresh_retried",
        "refresh_reuse_detected",
        "login_success",
        "logout",
        "login_failure",
        "login_failure",
        "account_locked",  # by the second failure: the limit is full
        "login_locked",
    ]
    assert [e["request_id"] for e in events] == [*sent[:-1], sent[-2], sent[-1]]
    for event in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"]), event
        assert event["client_ip"] == "127.0.0.1"
        if event["event"] in {"login_failure", "account_locked", "login_locked"}:  # the submitted email's hash
            assert re.fullmatch(r"[0-9a-f]{64}", event["email_hash"]), event
        else:
            assert uuid.UUID(event["account_id"]), event
    logged = json.dumps(handler.lines)
    for secret in secrets:
        assert secret not in logged


# --- refresh, logout, password change -------------------------------------------------------


def refresh(client: FlaskClient, token: str) -> TestResponse:
    return client.post("/refresh", json={"refresh_token": token})


def age_refresh_tokens(app: Flask, seconds: float) -> None:
    """Move every use of a refresh token ``seconds`` into the past (past the reuse interval, say)."""
    with app.app_context():
        session = get_session()
        session.execute(
            text("UPDATE auth.refresh_tokens SET used_at = used_at - make_interval(secs => :s)"), {"s": seconds}
        )
        session.commit()


def test_refresh_rotates_and_reuse_after_the_interval_revokes_family(app: Flask, client: FlaskClient) -> None:
    register(client)
    first = login(client).get_json()
    second = refresh(client, first["refresh_token"])
    assert second.status_code == 200
    assert second.headers["Cache-Control"] == "no-store"
    second = second.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    age_refresh_tokens(app, 6)  # the default interval is 5 s
    # reuse of the first token: 401, and the whole family (including the second token) is dead
    reused = refresh(client, first["refresh_token"])
    assert reused.status_code == 401
    assert "error=" not in reused.headers["WWW-Authenticate"]  # no access token was presented
    assert refresh(client, second["refresh_token"]).status_code == 401
    assert refresh(client, "not-a-token").status_code == 401


def test_a_refresh_retried_within_the_interval_gets_the_same_pair(app: Flask, client: FlaskClient) -> None:
    """Issue 22: a client that lost the answer to a refresh and sends it again keeps its session."""
    register(client)
    first = login(client).get_json()
    answer = refresh(client, first["refresh_token"]).get_json()
    retried = refresh(client, first["refresh_token"])
    assert retried.status_code == 200
    assert retried.headers["Cache-Control"] == "no-store"
    again = retried.get_json()
    assert (again["access_token"], again["refresh_token"]) == (answer["access_token"], answer["refresh_token"])
    assert 0 <= again["expires_in"] <= answer["expires_in"]
    # nothing was revoked: both access tokens work, and the successor refreshes as usual
    assert client.get("/me", headers=bearer(first["access_token"])).status_code == 200
    assert client.get("/me", headers=bearer(again["access_token"])).status_code == 200
    assert refresh(client, again["refresh_token"]).status_code == 200
    assert len(refresh_rows(app)) == 3  # login, first refresh, second refresh: the retry minted nothing


def test_the_reuse_interval_is_a_setting_and_zero_turns_it_off(make_app: Callable[..., Flask], app: Flask) -> None:
    client = make_app(refresh_reuse_interval_seconds=0).test_client()
    register(client)
    first = login(client).get_json()
    second = refresh(client, first["refresh_token"]).get_json()
    assert all(row["successor"] is None for row in refresh_rows(app))  # nothing kept to replay
    assert refresh(client, first["refresh_token"]).status_code == 401  # at once: the family is ended
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 401


def test_the_successor_pair_is_stored_sealed_and_erased_after_the_interval(app: Flask, client: FlaskClient) -> None:
    register(client)
    first = login(client).get_json()
    second = refresh(client, first["refresh_token"]).get_json()
    used = refresh_rows(app)[0]
    sealed = bytes(used["successor"])
    for secret in (second["refresh_token"], second["access_token"], first["refresh_token"]):
        assert secret.encode() not in sealed
        assert secret not in " ".join(str(v) for row in refresh_rows(app) for v in row.values())
    assert b"access_token" not in sealed  # not the JSON document in the clear
    # Past the interval, the next refresh of the family erases what it sealed.
    age_refresh_tokens(app, 6)
    third = refresh(client, second["refresh_token"])
    assert third.status_code == 200
    rows = refresh_rows(app)
    assert rows[0]["successor"] is None
    assert rows[1]["successor"] is not None  # the refresh just made: its own interval runs
    assert client.post("/logout", headers=bearer(third.get_json()["access_token"])).status_code == 204
    assert all(row["successor"] is None for row in refresh_rows(app))  # a logout erases them all


def test_a_retry_at_another_replica_gets_the_same_pair(make_app: Callable[..., Flask], app: Flask) -> None:
    """The state is in Postgres, so both auth replicas answer a retry alike."""
    one, other = app.test_client(), make_app().test_client()
    register(one)
    first = login(one).get_json()
    answer = refresh(one, first["refresh_token"]).get_json()
    again = refresh(other, first["refresh_token"]).get_json()
    assert again["refresh_token"] == answer["refresh_token"]
    assert again["access_token"] == answer["access_token"]


def test_a_retry_after_logout_is_401(app: Flask, client: FlaskClient) -> None:
    register(client)
    first = login(client).get_json()
    answer = refresh(client, first["refresh_token"]).get_json()
    assert client.post("/logout", headers=bearer(answer["access_token"])).status_code == 204
    assert refresh(client, first["refresh_token"]).status_code == 401


@pytest.mark.parametrize("operation", ["login", "refresh", "me", "logout"])
def test_a_request_whose_pooled_connection_died_is_answered_as_usual(
    make_app: Callable[..., Flask], app: Flask, operation: str
) -> None:
    """No ping at checkout (wharf_common.db): the request's first statement finds the connection that
    died while it idled in the pool, and the request runs again on a new one. (Two connections at
    most: logout reads the account on the autocommit connection, then writes in a transaction.)"""
    single = make_app(db_pool_size=2, db_max_overflow=0)
    client = single.test_client()
    register(client)
    tokens = login(client).get_json()
    with single.test_request_context():
        pid = get_session().connection().connection.dbapi_connection.get_backend_pid()  # type: ignore[union-attr]
    with common.of(app).engine.connect() as other:
        assert other.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})

    if operation == "login":
        assert login(client).status_code == 200
    elif operation == "refresh":
        assert refresh(client, tokens["refresh_token"]).status_code == 200
        assert len(refresh_rows(app)) == 2  # one successor, not two
    elif operation == "me":
        assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
    else:
        assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 204
        assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401
    with single.test_request_context():
        assert get_session().connection().connection.dbapi_connection.get_backend_pid() != pid  # type: ignore[union-attr]


def refresh_rows(app: Flask) -> list[dict]:
    with app.app_context():
        rows = get_session().execute(text("SELECT * FROM auth.refresh_tokens ORDER BY created_at"))
        return [dict(row._mapping) for row in rows]


def test_refresh_tokens_are_stored_only_as_hashes_with_family_and_expiry(app: Flask, client: FlaskClient) -> None:
    import base64
    import hashlib

    register(client)
    first = login(client).get_json()
    second = client.post("/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    assert len(base64.urlsafe_b64decode(first["refresh_token"] + "==")) >= 32  # 256 bits
    rows = refresh_rows(app)
    assert len(rows) == 2
    stored = " ".join(str(v) for row in rows for v in row.values())
    for token in (first["refresh_token"], second["refresh_token"]):
        assert token not in stored
    assert [r["token_hash"] for r in rows] == [
        hashlib.sha256(t.encode()).hexdigest() for t in (first["refresh_token"], second["refresh_token"])
    ]
    assert rows[0]["family_id"] == rows[1]["family_id"]
    assert rows[0]["used_at"] is not None
    assert rows[1]["used_at"] is None
    for row in rows:
        assert abs((row["expires_at"] - row["created_at"]).total_seconds() - 30 * 86_400) < 60
        assert row["revoked_at"] is None
    assert client.post("/logout", headers=bearer(second["access_token"])).status_code == 204
    assert all(row["revoked_at"] is not None for row in refresh_rows(app))


def test_refresh_token_lifetime_is_configurable_and_enforced(make_app: Callable[..., Flask], app: Flask) -> None:
    short = make_app(refresh_token_ttl_seconds=3600)
    client = short.test_client()
    register(client)
    token = login(client).get_json()["refresh_token"]
    (row,) = refresh_rows(app)
    assert abs((row["expires_at"] - row["created_at"]).total_seconds() - 3600) < 60
    with app.app_context():
        session = get_session()
        session.execute(text("UPDATE auth.refresh_tokens SET expires_at = now() - interval '1 second'"))
        session.commit()
    assert client.post("/refresh", json={"refresh_token": token}).status_code == 401


def test_concurrent_refreshes_of_one_token_mint_one_pair(app: Flask, client: FlaskClient) -> None:
    """Two replicas (here: threads) presenting the same token at once: the row lock makes them
    answer one after the other, and the later one gets the pair the first one minted."""
    import threading

    register(client)
    token = login(client).get_json()["refresh_token"]
    results: list[tuple[int, str, str]] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        response = app.test_client().post("/refresh", json={"refresh_token": token})
        body = response.get_json()
        results.append((response.status_code, body.get("access_token", ""), body.get("refresh_token", "")))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _, _ in results] == [200] * 4
    assert len(set(results)) == 1, "every presentation got the same pair"
    assert len(refresh_rows(app)) == 2  # the login's token and one successor


def test_concurrent_reuse_after_the_interval_mints_nothing(make_app: Callable[..., Flask], app: Flask) -> None:
    import threading

    strict = make_app(refresh_reuse_interval_seconds=0)
    client = strict.test_client()
    register(client)
    token = login(client).get_json()["refresh_token"]
    results: list[int] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        results.append(strict.test_client().post("/refresh", json={"refresh_token": token}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(200) <= 1
    assert all(row["revoked_at"] is not None for row in refresh_rows(app))  # the reuse ended the family


def test_logout_revokes_access_and_refresh(client: FlaskClient) -> None:
    register(client)
    tokens = login(client).get_json()
    other_session = login(client).get_json()
    assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 204
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert client.post("/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    # another session of the same account goes on
    assert client.get("/me", headers=bearer(other_session["access_token"])).status_code == 200
    assert client.post("/logout").status_code == 401


def test_logout_ends_every_token_of_the_session(client: FlaskClient, app: Flask) -> None:
    """Access tokens obtained by refreshing the same login die with it, and the revocation is
    recorded durably (with its kinds) for the other services to re-sync."""
    register(client)
    first = login(client).get_json()
    refreshed = client.post("/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    assert client.post("/logout", headers=bearer(first["access_token"])).status_code == 204
    assert client.get("/me", headers=bearer(refreshed["access_token"])).status_code == 401
    with app.app_context():
        kinds = get_session().execute(text("SELECT kind FROM auth.revocations ORDER BY kind")).scalars().all()
    assert kinds == ["family", "jti"]


def test_refresh_reuse_also_kills_the_sessions_access_tokens(app: Flask, client: FlaskClient) -> None:
    register(client)
    first = login(client).get_json()
    second = client.post("/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 200
    age_refresh_tokens(app, 6)
    assert client.post("/refresh", json={"refresh_token": first["refresh_token"]}).status_code == 401  # stolen
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 401


def test_revocations_are_pushed_on_the_channel(client: FlaskClient, app: Flask) -> None:
    from wharf_common.revocation import CHANNEL, Revocation

    pubsub = common.of(app).redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    try:
        register(client)
        tokens = login(client).get_json()
        assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 204
        received = []
        deadline = time.monotonic() + 5
        while len(received) < 2 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message:
                received.append(Revocation.from_message(message["data"]))
    finally:
        pubsub.close()
    assert sorted(r.kind for r in received if r) == ["family", "jti"]


def test_the_internal_revocation_list_serves_what_is_revoked_to_the_backend_only(
    client: FlaskClient, app: Flask
) -> None:
    import jwt as pyjwt

    from wharf_common.revocation import Revocation

    register(client)
    tokens = login(client).get_json()
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert client.get("/internal/revocations").get_json() == {"revocations": []}
    assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 204
    listed = client.get("/internal/revocations")
    assert listed.status_code == 200
    assert listed.headers["Cache-Control"] == "no-store"
    revocations = [Revocation.from_json(item) for item in listed.get_json()["revocations"]]
    assert {(r.kind, r.value) for r in revocations if r} == {("jti", claims["jti"]), ("family", claims["fid"])}
    # Through the edge (nginx sets X-Forwarded-For), it does not exist.
    forwarded = client.get("/internal/revocations", headers={"X-Forwarded-For": "203.0.113.9"})
    assert forwarded.status_code == 404
    assert forwarded.mimetype == "application/problem+json"
    # Not part of the public contract either.
    assert not [path for path in client.get("/openapi.json").get_json()["paths"] if "internal" in path]


def test_openapi_document(client: FlaskClient) -> None:
    from openapi_spec_validator import validate

    document = client.get("/openapi.json").get_json()
    validate(document)
    paths = document["paths"]
    sessions = {"/register", "/login", "/refresh", "/logout", "/me", "/password", "/.well-known/jwks.json"}
    recovery = {"/password-reset", "/password-reset/confirm", "/verify-email", "/verify-email/resend"}
    security = {"/login/mfa", "/mfa/totp", "/mfa/totp/confirm", "/sessions", "/sessions/{session_id}", "/events"}
    assert set(paths) == sessions | recovery | security | {"/sign-in-alert"}
    assert set(paths["/mfa/totp"]) == {"post", "delete"}
    assert set(paths["/sessions"]) == {"get", "delete"}
    assert set(paths["/login"]["post"]["responses"]) >= {"200", "400", "401", "415", "422", "429", "503"}
    # The reuse interval is part of the contract (issue 22).
    assert "REFRESH_REUSE_INTERVAL_SECONDS" in paths["/refresh"]["post"]["description"]
    assert document["servers"] == [{"url": "/", "description": "Relative to the URL this document was fetched from"}]
    assert paths["/me"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/login"]["post"]
    # A new password's schema states the policy's bounds, and its description the rest (issue 32).
    schemas = document["components"]["schemas"]
    for body, field in (("RegisterBody", "password"), ("PasswordChangeBody", "new_password")):
        schema = schemas[body]["properties"][field]
        assert (schema["minLength"], schema["maxLength"]) == (15, 256)
        assert "common" in schema["description"]
    assert schemas["EmailBody"]["properties"]["email"]["format"] == "idn-email"


def test_password_change_ends_sessions(client: FlaskClient) -> None:
    register(client)
    other_session = login(client).get_json()
    tokens = login(client).get_json()
    wrong = client.post(
        "/password",
        json={"current_password": "not my password at all", "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert wrong.status_code == 403
    weak = client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=bearer(tokens["access_token"]),
    )
    assert weak.status_code == 422
    assert weak.get_json()["errors"][0]["field"] == "new_password"
    common = client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "HD764nw5d7e1vb1"},
        headers=bearer(tokens["access_token"]),
    )
    assert common.status_code == 422
    assert "common" in common.get_json()["errors"][0]["message"]
    missing = client.post("/password", json={"new_password": NEW_PASSWORD}, headers=bearer(tokens["access_token"]))
    assert missing.status_code == 422
    assert [e["field"] for e in missing.get_json()["errors"]] == ["current_password"]
    changed = client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert changed.status_code == 204
    for session in (tokens, other_session):  # every session of the account ends
        assert client.get("/me", headers=bearer(session["access_token"])).status_code == 401
        assert client.post("/refresh", json={"refresh_token": session["refresh_token"]}).status_code == 401
    assert login(client).status_code == 401
    fresh = login(client, password=NEW_PASSWORD).get_json()
    assert client.get("/me", headers=bearer(fresh["access_token"])).status_code == 200


# --- JWKS, CLI, migrations ------------------------------------------------------------------


def test_jwks(client: FlaskClient) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    (key,) = response.get_json()["keys"]
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["use"] == "sig"
    assert key["alg"] == "EdDSA"
    assert "d" not in key
    assert len(key["kid"]) == 43


def test_grant_admin_cli(app: Flask, client: FlaskClient) -> None:
    register(client)
    result = app.test_cli_runner().invoke(args=["grant-admin", "ADA@example.com"])
    assert result.exit_code == 0, result.output
    tokens = login(client).get_json()
    assert client.get("/me", headers=bearer(tokens["access_token"])).get_json()["roles"] == ["user", "admin"]
    assert app.test_cli_runner().invoke(args=["grant-admin", "nobody@example.com"]).exit_code != 0


def test_migrations_downgrade_and_upgrade(app: Flask) -> None:
    runner = app.test_cli_runner()
    try:
        result = runner.invoke(args=["db", "downgrade", "base"])
        assert result.exit_code == 0, result.output
        with app.app_context():
            tables = (
                get_session()
                .execute(
                    text(
                        "SELECT count(*) FROM information_schema.tables"
                        " WHERE table_schema = 'auth' AND table_name <> 'alembic_version'"
                    )
                )
                .scalar_one()
            )
        assert tables == 0
    finally:
        result = runner.invoke(args=["db", "upgrade", "head"])
        assert result.exit_code == 0, result.output


def test_access_token_verifies_against_published_jwks(client: FlaskClient) -> None:
    import jwt as pyjwt

    from wharf_common.tokens import TokenVerifier

    register(client)
    tokens = login(client).get_json()
    header = pyjwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    verifier = TokenVerifier(
        lambda: client.get("/.well-known/jwks.json").get_json(), issuer="wharf-auth", audience="wharf"
    )
    claims = verifier.verify(tokens["access_token"])
    assert header["kid"] in {k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
    assert set(claims) >= {"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "roles", "fid"}
    assert claims["exp"] - claims["nbf"] == 900


class Clock:
    """The wall clock a KeyRing compares key publication times with; a test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key_name(at: float) -> str:
    """The file name ``make rotate-keys`` gives a key made at ``at`` (devsecrets.KEY_NAME_FORMAT)."""
    from datetime import UTC, datetime

    from wharf_common.devsecrets import KEY_NAME_FORMAT

    return datetime.fromtimestamp(at, UTC).strftime(KEY_NAME_FORMAT) + ".pem"


def client_with_clock(make_app: Callable[..., Flask], keys_dir: Path, clock: Clock, activation: int) -> FlaskClient:
    app = make_app(signing_keys_dir=keys_dir, signing_key_activation_seconds=activation)
    extensions.of(app).keyring.clock = clock
    return app.test_client()


def signed_by(token: str) -> str:
    import jwt as pyjwt

    return pyjwt.get_unverified_header(token)["kid"]


def test_a_new_key_is_published_at_once_and_signs_only_after_the_activation_delay(
    make_app: Callable[..., Flask], app: Flask, tmp_path: Path, signing_key_writer: Callable[[Path, str], str]
) -> None:
    from wharf_common.tokens import JwksCache, TokenVerifier

    rotated_at = float(int(time.time()))  # key names have one-second resolution
    old_kid = signing_key_writer(tmp_path, key_name(rotated_at - 86_400))
    clock = Clock(rotated_at - 1)
    client = client_with_clock(make_app, tmp_path, clock, activation=10)
    register(client)
    old = login(client).get_json()["access_token"]
    assert signed_by(old) == old_kid
    # A verifier like api's (refetch on an unknown kid at most every 5 s) fetches the JWKS just
    # before the rotation: without the activation delay it would reject the new key's first tokens.
    verifier = TokenVerifier(
        JwksCache(lambda: client.get("/.well-known/jwks.json").get_json(), min_refresh_interval=5, clock=clock),
        issuer="wharf-auth",
        audience="wharf",
    )
    assert verifier.verify(old)["sub"]

    clock.now = rotated_at
    new_kid = signing_key_writer(tmp_path, key_name(rotated_at))
    assert [k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]] == [old_kid, new_kid]
    clock.now = rotated_at + 9.9
    before_activation = login(client).get_json()["access_token"]
    assert signed_by(before_activation) == old_kid
    assert verifier.verify(before_activation)["sub"]

    clock.now = rotated_at + 10  # activated by time alone: nothing changed on disk
    after = login(client).get_json()["access_token"]
    assert signed_by(after) == new_kid
    assert verifier.verify(after)["sub"]  # its one refetch on the unknown kid is allowed by now
    for token in (old, before_activation, after):  # the old key's tokens keep verifying
        assert client.get("/me", headers=bearer(token)).status_code == 200
        assert verifier.verify(token)["sub"]


def test_a_single_fresh_key_signs_at_once(
    make_app: Callable[..., Flask], app: Flask, tmp_path: Path, signing_key_writer: Callable[[Path, str], str]
) -> None:
    made_at = float(int(time.time()))
    kid = signing_key_writer(tmp_path, key_name(made_at))
    client = client_with_clock(make_app, tmp_path, Clock(made_at), activation=10)
    register(client)
    token = login(client).get_json()["access_token"]
    assert signed_by(token) == kid
    assert client.get("/me", headers=bearer(token)).status_code == 200


def test_signing_key_activation_must_be_a_number_of_seconds_within_bounds(
    auth_settings_kwargs: dict[str, object],
) -> None:
    from pydantic import ValidationError

    from wharf_auth.settings import AuthSettings

    assert AuthSettings(**auth_settings_kwargs).signing_key_activation_seconds == 10
    for wrong in (-1, 3601, "soon"):
        with pytest.raises(ValidationError, match="signing_key_activation_seconds"):
            AuthSettings(**auth_settings_kwargs, signing_key_activation_seconds=wrong)


def test_missing_signing_keys_is_a_configuration_error(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        make_app(signing_keys_dir=tmp_path / "missing")
    assert exit_info.value.code == 78


def test_devsecrets_writes_a_signing_key_directory(tmp_path: Path) -> None:
    from wharf_auth.keys import load_keys
    from wharf_common import devsecrets

    created = devsecrets.generate(tmp_path)
    assert any(name.startswith("auth/signing-keys/") and name.endswith(".pem") for name in created)
    assert len(load_keys(tmp_path / "auth/signing-keys")) == 1
    assert not any(n.startswith("auth/signing-keys/") for n in devsecrets.generate(tmp_path))  # kept on rerun
