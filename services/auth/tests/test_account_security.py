"""Issue 30: sessions, the TOTP second factor, sign-in alerts, locks and account events, against the
test Postgres and Redis; mail through RQ's worker and an in-process SMTP server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import text
from werkzeug.test import TestResponse

from wharf_auth import clients, mail, mfa
from wharf_auth.settings import AuthSettings, MailWorkerSettings
from wharf_common import extensions as common
from wharf_common.db import get_session
from wharf_common.revocation import CHANNEL

from .conftest import MFA_KEY, Inbox, run_jobs, token_of

PASSWORD = "correct horse battery staple"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)


def register(client: FlaskClient, email: str = "ada@example.com") -> str:
    response = client.post("/register", json={"email": email, "password": PASSWORD, "name": "Ada"})
    assert response.status_code == 201, response.get_json()
    return email


def login(
    client: FlaskClient, email: str = "ada@example.com", password: str = PASSWORD, agent: str = FIREFOX
) -> TestResponse:
    return client.post("/login", json={"email": email, "password": password}, headers={"User-Agent": agent})


def tokens(client: FlaskClient, email: str = "ada@example.com", agent: str = FIREFOX) -> dict[str, Any]:
    response = login(client, email, agent=agent)
    assert response.status_code == 200, response.get_json()
    assert "access_token" in response.get_json()
    return response.get_json()


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def sql(app: Flask, statement: str, **params: object) -> list[Any]:
    with app.app_context():
        session = get_session()
        rows = session.execute(text(statement), params)
        result = list(rows) if rows.returns_rows else []
        session.commit()
        return result


def event_types(client: FlaskClient, pair: dict[str, Any]) -> list[str]:
    response = client.get("/events?limit=100", headers=bearer(pair))
    assert response.status_code == 200
    return [e["type"] for e in response.get_json()["items"]]


def queued_jobs(app: Flask) -> list[str]:
    """The functions of the jobs waiting on the mail queue."""
    return [job.func_name for job in Queue(mail.QUEUE, connection=common.of(app).redis, serializer=JSONSerializer).jobs]


# --- sessions -----------------------------------------------------------------------------------


def test_sessions_lists_each_sign_in_with_its_client_and_network(client: FlaskClient) -> None:
    register(client)
    first = tokens(client, agent=FIREFOX)
    second = tokens(client, agent=SAFARI)
    refreshed = client.post("/refresh", json={"refresh_token": first["refresh_token"]}).get_json()

    response = client.get("/sessions", headers=bearer(refreshed))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    items = response.get_json()["items"]
    assert [(s["client"], s["current"]) for s in items] == [("Firefox on Linux", True), ("Mobile Safari on iOS", False)]
    assert {s["network"] for s in items} == {"127.0.0.0/24"}  # the test client's 127.0.0.1, as a prefix
    first_fid = jwt.decode(first["access_token"], options={"verify_signature": False})["fid"]
    assert items[0]["id"] == first_fid  # a refresh is the same session, used later
    assert items[0]["last_used_at"] > items[0]["created_at"]
    assert client.get("/sessions", headers=bearer(second)).get_json()["items"][1]["current"] is True


def test_ending_a_session_ends_its_tokens_everywhere_and_others_get_404(client: FlaskClient, app: Flask) -> None:
    register(client)
    register(client, "bob@example.com")
    mine, other = tokens(client), tokens(client, agent=SAFARI)
    bobs = tokens(client, "bob@example.com")
    other_id = jwt.decode(other["access_token"], options={"verify_signature": False})["fid"]
    bobs_id = jwt.decode(bobs["access_token"], options={"verify_signature": False})["fid"]
    pubsub = common.of(app).redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    try:
        pubsub.get_message(timeout=1)
        assert client.delete(f"/sessions/{bobs_id}", headers=bearer(mine)).status_code == 404
        assert client.delete(f"/sessions/{uuid.uuid4()}", headers=bearer(mine)).status_code == 404
        assert client.delete("/sessions/not-a-uuid", headers=bearer(mine)).status_code == 404
        assert client.delete(f"/sessions/{other_id}", headers=bearer(mine)).status_code == 204
        pushed = pubsub.get_message(timeout=2)
    finally:
        pubsub.close()

    assert pushed is not None
    assert other_id in pushed["data"].decode()
    assert client.get("/me", headers=bearer(other)).status_code == 401
    assert client.post("/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 401
    assert client.get("/me", headers=bearer(mine)).status_code == 200
    assert client.get("/me", headers=bearer(bobs)).status_code == 200
    assert client.delete(f"/sessions/{other_id}", headers=bearer(mine)).status_code == 404  # ended already
    assert [s["id"] for s in client.get("/sessions", headers=bearer(mine)).get_json()["items"]] != [other_id]
    assert "session_ended" in event_types(client, mine)


def test_ending_all_other_sessions_keeps_the_current_one(client: FlaskClient) -> None:
    register(client)
    current, *others = [tokens(client, agent=agent) for agent in (FIREFOX, SAFARI, "curl/8.0")]
    assert client.delete("/sessions", headers=bearer(current)).status_code == 204
    assert client.get("/me", headers=bearer(current)).status_code == 200
    for pair in others:
        assert client.get("/me", headers=bearer(pair)).status_code == 401
        assert client.post("/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    (left,) = client.get("/sessions", headers=bearer(current)).get_json()["items"]
    assert left["current"] is True
    assert event_types(client, current).count("session_ended") == 2


def test_sign_out_ends_the_session_for_the_list_too(client: FlaskClient) -> None:
    register(client)
    staying, leaving = tokens(client), tokens(client, agent=SAFARI)
    assert client.post("/logout", headers=bearer(leaving)).status_code == 204
    assert [s["client"] for s in client.get("/sessions", headers=bearer(staying)).get_json()["items"]] == [
        "Firefox on Linux"
    ]


@pytest.mark.parametrize(
    ("agent", "described"),
    [
        (FIREFOX, "Firefox on Linux"),
        (SAFARI, "Mobile Safari on iOS"),
        ("python-requests/2.32", "Python Requests"),
        ("", "Unknown client"),
        ("x" * 10_000, "Unknown client"),
    ],
)
def test_a_client_is_described_coarsely(agent: str, described: str) -> None:
    assert clients.describe(agent) == described


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1:2::5", "2001:db8:1::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("not an address", "unknown"),
    ],
)
def test_only_the_network_prefix_is_kept(address: str, network: str) -> None:
    assert clients.network_of(address) == network


# --- the second factor --------------------------------------------------------------------------


def enrol(client: FlaskClient, pair: dict[str, Any]) -> tuple[pyotp.TOTP, list[str]]:
    """Enrol a TOTP factor and confirm it with a code of the step before the current one (so the
    tests' next codes, of the current and later steps, are not replays): the app and the recovery codes."""
    started = client.post("/mfa/totp", headers=bearer(pair))
    assert started.status_code == 200, started.get_json()
    totp = pyotp.TOTP(started.get_json()["secret"])
    confirmed = client.post("/mfa/totp/confirm", json={"code": totp.at(time.time() - 30)}, headers=bearer(pair))
    assert confirmed.status_code == 200, confirmed.get_json()
    return totp, confirmed.get_json()["recovery_codes"]


def challenge(client: FlaskClient, email: str = "ada@example.com") -> str:
    response = login(client, email)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"mfa_required", "mfa_token", "expires_in"}
    assert body["mfa_required"] is True
    return body["mfa_token"]


def second_step(client: FlaskClient, mfa_token: str, **code: str) -> TestResponse:
    return client.post("/login/mfa", json={"mfa_token": mfa_token, **code}, headers={"User-Agent": FIREFOX})


def test_enrolment_shows_the_secret_once_and_stores_it_encrypted(app: Flask, client: FlaskClient) -> None:
    register(client)
    pair = tokens(client)
    started = client.post("/mfa/totp", headers=bearer(pair))
    assert started.headers["Cache-Control"] == "no-store"
    body = started.get_json()
    assert body["otpauth_uri"] == pyotp.TOTP(body["secret"]).provisioning_uri(
        name="ada@example.com", issuer_name="Wharf"
    )
    assert body["qr_svg"].startswith("<svg")
    assert 'xmlns="http://www.w3.org/2000/svg"' in body["qr_svg"]
    (stored,) = sql(app, "SELECT secret, confirmed_at FROM auth.totp_factors")
    assert body["secret"].encode() not in bytes(stored.secret)
    assert mfa.SecretBox(MFA_KEY).open(bytes(stored.secret)) == body["secret"]
    assert stored.confirmed_at is None
    # Not active until confirmed: sign-in still takes the password alone.
    assert "access_token" in login(client).get_json()


def test_confirmation_needs_a_right_code_and_gives_ten_single_use_recovery_codes(
    app: Flask, client: FlaskClient
) -> None:
    register(client)
    pair = tokens(client)
    assert client.post("/mfa/totp/confirm", json={"code": "123456"}, headers=bearer(pair)).status_code == 409
    secret = client.post("/mfa/totp", headers=bearer(pair)).get_json()["secret"]
    wrong = client.post("/mfa/totp/confirm", json={"code": "000000"}, headers=bearer(pair))
    assert (wrong.status_code, wrong.get_json()["type"].rsplit("/", 1)[1]) == (403, "wrong-code")
    assert client.post("/mfa/totp/confirm", json={"code": "12345"}, headers=bearer(pair)).status_code == 422
    right = client.post("/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=bearer(pair))
    assert right.status_code == 200
    codes = right.get_json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    stored = {row.code_hash for row in sql(app, "SELECT code_hash FROM auth.recovery_codes")}
    assert stored == {mfa.recovery_code_hash(c) for c in codes}
    assert not any(code in str(stored) for code in codes)
    assert client.post("/mfa/totp", headers=bearer(pair)).status_code == 409  # already active
    assert "mfa_enabled" in event_types(client, pair)


def test_sign_in_with_a_second_factor(client: FlaskClient) -> None:
    register(client)
    totp, _codes = enrol(client, tokens(client))
    mfa_token = challenge(client)
    # The challenge is not an access token, and an access token is not a challenge.
    assert client.get("/me", headers={"Authorization": f"Bearer {mfa_token}"}).status_code == 401
    assert second_step(client, mfa_token, code="000000").status_code == 401
    done = second_step(client, mfa_token, code=totp.now())
    assert done.status_code == 200, done.get_json()
    assert done.headers["Cache-Control"] == "no-store"
    pair = done.get_json()
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd", "otp"]
    assert second_step(client, mfa_token, code=totp.at(time.time() + 30)).status_code == 401  # used up
    assert second_step(client, pair["access_token"], code=totp.at(time.time() + 30)).status_code == 401
    # The session keeps its amr through refreshes.
    again = client.post("/refresh", json={"refresh_token": pair["refresh_token"]}).get_json()
    assert jwt.decode(again["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]


def test_a_code_is_accepted_once_per_time_step(client: FlaskClient) -> None:
    register(client)
    totp, _codes = enrol(client, tokens(client))
    code = totp.now()
    assert second_step(client, challenge(client), code=code).status_code == 200
    assert second_step(client, challenge(client), code=code).status_code == 401  # replayed
    assert second_step(client, challenge(client), code=totp.at(time.time() - 30)).status_code == 401  # older
    assert second_step(client, challenge(client), code=totp.at(time.time() + 30)).status_code == 200  # next step


def test_a_recovery_code_works_once_and_only_for_its_account(client: FlaskClient) -> None:
    register(client)
    register(client, "bob@example.com")
    _totp, codes = enrol(client, tokens(client))
    bobs_totp, _bobs_codes = enrol(client, tokens(client, "bob@example.com"))
    assert second_step(client, challenge(client, "bob@example.com"), recovery_code=codes[0]).status_code == 401
    assert second_step(client, challenge(client, "bob@example.com"), code=_other_step(bobs_totp)).status_code == 200
    assert second_step(client, challenge(client), code=bobs_totp.now()).status_code == 401  # bob's code
    done = second_step(client, challenge(client), recovery_code=codes[0].upper().replace("-", ""))
    assert done.status_code == 200
    assert jwt.decode(done.get_json()["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]
    assert second_step(client, challenge(client), recovery_code=codes[0]).status_code == 401
    assert "recovery_code_used" in event_types(client, done.get_json())


def _other_step(totp: pyotp.TOTP) -> str:
    return totp.at(time.time() + 30)


@pytest.mark.parametrize(
    "body",
    [
        {"mfa_token": "x"},
        {"mfa_token": "x", "code": "123456", "recovery_code": "abcd-efgh-ijkl-mnop"},
        {"mfa_token": "x", "code": "12345a"},
        {"mfa_token": "x", "recovery_code": "short"},
        {"code": "123456"},
        {"mfa_token": "x", "code": "123456", "extra": 1},
    ],
)
def test_malformed_second_steps_are_422_naming_the_field(client: FlaskClient, body: dict[str, Any]) -> None:
    response = client.post("/login/mfa", json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"]


def test_wrong_codes_count_against_the_account_like_wrong_passwords(make_app: Callable[..., Flask], app: Flask) -> None:
    client = make_app(login_max_failures=3).test_client()
    register(client)
    totp, _codes = enrol(client, tokens(client))
    mfa_token = challenge(client)
    assert login(client, password="wrong password entirely").status_code == 401
    assert second_step(client, mfa_token, code="000000").status_code == 401
    # A right password does not wipe the count of wrong codes (and supersedes the earlier challenge).
    newer = challenge(client)
    assert second_step(client, mfa_token, code=totp.now()).status_code == 401
    assert second_step(client, newer, code="111111").status_code == 401
    locked = second_step(client, newer, code=totp.now())
    assert locked.status_code == 429
    assert "Retry-After" in locked.headers
    assert login(client).status_code == 429
    assert queued_jobs(app).count("wharf_auth.mail.send_lock_notice") == 1


def test_removing_the_factor_needs_the_password_and_a_code(client: FlaskClient) -> None:
    register(client)
    pair = tokens(client)
    totp, codes = enrol(client, pair)
    wrong_password = {"password": "not the password at all", "code": totp.now()}
    assert client.delete("/mfa/totp", json=wrong_password, headers=bearer(pair)).status_code == 403
    assert (
        client.delete("/mfa/totp", json={"password": PASSWORD, "code": "000000"}, headers=bearer(pair)).status_code
        == 403
    )
    assert client.delete("/mfa/totp", json={"password": PASSWORD}, headers=bearer(pair)).status_code == 422
    removed = client.delete("/mfa/totp", json={"password": PASSWORD, "recovery_code": codes[1]}, headers=bearer(pair))
    assert removed.status_code == 204
    assert "access_token" in login(client).get_json()  # the password alone again
    assert (
        client.delete("/mfa/totp", json={"password": PASSWORD, "code": totp.now()}, headers=bearer(pair)).status_code
        == 409
    )
    assert {"mfa_enabled", "mfa_disabled", "second_factor_failed"} <= set(event_types(client, pair))


def _grant_admin(app: Flask, email: str = "ada@example.com") -> None:
    assert app.test_cli_runner().invoke(args=["grant-admin", email]).exit_code == 0


def test_admins_sign_in_only_with_a_second_factor_when_required(make_app: Callable[..., Flask], app: Flask) -> None:
    register(app.test_client())
    _grant_admin(app)
    before = tokens(app.test_client())  # signed in before the setting was turned on
    strict = make_app(require_admin_mfa=True).test_client()

    refused = login(strict)
    assert refused.status_code == 403
    assert refused.get_json()["type"].endswith("/second-factor-required")
    assert "REQUIRE_ADMIN_MFA" in refused.get_json()["detail"]
    assert strict.post("/refresh", json={"refresh_token": before["refresh_token"]}).status_code == 401

    totp, _codes = enrol(app.test_client(), tokens(app.test_client()))
    done = second_step(strict, challenge(strict), code=totp.now())
    assert done.status_code == 200
    kept = strict.delete(
        "/mfa/totp", json={"password": PASSWORD, "code": _other_step(totp)}, headers=bearer(done.get_json())
    )
    assert (kept.status_code, kept.get_json()["type"].rsplit("/", 1)[1]) == (409, "mfa-required")
    assert "sign_in_refused" in event_types(strict, done.get_json())


def test_the_secret_key_rotates(make_app: Callable[..., Flask], app: Flask, client: FlaskClient) -> None:
    register(client)
    totp, codes = enrol(client, tokens(client))
    new_key = "a brand-new key for second-factor secrets, 32+"
    rotated = make_app(mfa_encryption_key=f"{new_key}\n{MFA_KEY}").test_client()
    assert second_step(rotated, challenge(rotated), code=totp.now()).status_code == 200
    (stored,) = sql(app, "SELECT secret FROM auth.totp_factors")
    assert mfa.SecretBox(new_key).open(bytes(stored.secret)) == totp.secret  # moved to the first key on use
    # Without a line that opens it, the secret is unreadable: an error that says so, never a pass;
    # recovery codes (hashes, not encrypted) still sign in.
    other_key = "yet another key of at least 32 characters"
    with pytest.raises(mfa.UnreadableSecret):
        mfa.SecretBox(other_key).open(bytes(stored.secret))
    lost = make_app(mfa_encryption_key=other_key).test_client()
    unreadable = second_step(lost, challenge(lost), code=totp.at(time.time() + 30))
    assert (unreadable.status_code, unreadable.get_json()["type"].rsplit("/", 1)[1]) == (
        500,
        "second-factor-unreadable",
    )
    assert second_step(lost, challenge(lost), recovery_code=codes[0]).status_code == 200


@pytest.mark.parametrize("key", ["", "too short a key", f"{MFA_KEY}\nshort line"])
def test_the_key_must_be_long_enough(auth_settings_kwargs: dict[str, object], key: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="mfa_encryption_key"):
        AuthSettings(**{**auth_settings_kwargs, "mfa_encryption_key": key})


# --- sign-in alerts and locks -----------------------------------------------------------------


def test_a_sign_in_from_a_new_client_mails_an_alert_whose_link_ends_it(
    app: Flask, client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    settings = worker_settings()
    register(client)
    mine = tokens(client, agent=FIREFOX)  # the first sign-in ever: no alert
    tokens(client, agent=FIREFOX)  # a known client
    assert queued_jobs(app).count("wharf_auth.mail.send_sign_in_alert") == 0
    theirs = tokens(client, agent=SAFARI)
    run_jobs(settings)

    (alert,) = [m for m in inbox.to("ada@example.com") if m["Subject"] == mail.SUBJECTS["alert"]]
    text_body = alert.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Mobile Safari on iOS" in text_body
    assert "127.0.0.0/24" in text_body
    token = token_of(alert, "sign-in-alert")
    assert "127.0.0.1" not in text_body

    reported = client.post("/sign-in-alert", json={"token": token})
    assert reported.status_code == 200
    assert reported.get_json() == {"session_ended": True, "password_reset_mailed": True}
    assert client.get("/me", headers=bearer(theirs)).status_code == 401
    assert client.get("/me", headers=bearer(mine)).status_code == 200
    again = client.post("/sign-in-alert", json={"token": token})
    assert (again.status_code, again.get_json()["type"].rsplit("/", 1)[1]) == (400, "token-used")
    run_jobs(settings)
    (reset,) = [m for m in inbox.to("ada@example.com") if m["Subject"] == mail.SUBJECTS["reset"]]
    token_of(reset, "reset-password")
    assert "session_reported" in event_types(client, mine)


def test_alerts_compare_client_and_network_within_the_window_and_can_be_off(
    make_app: Callable[..., Flask], app: Flask, client: FlaskClient
) -> None:
    register(client)
    tokens(client)
    sql(app, "UPDATE auth.sessions SET created_at = now() - interval '31 days'")
    sql(app, "UPDATE auth.refresh_tokens SET created_at = now() - interval '31 days'")
    tokens(client)  # same client, but not seen in the last 30 days
    assert queued_jobs(app).count("wharf_auth.mail.send_sign_in_alert") == 1
    off = make_app(sign_in_alert_days=0).test_client()
    tokens(off, agent=SAFARI)
    assert queued_jobs(app).count("wharf_auth.mail.send_sign_in_alert") == 1


def test_a_lock_mails_the_owner_once(
    make_app: Callable[..., Flask], app: Flask, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    settings = worker_settings()
    client = make_app(login_max_failures=2).test_client()
    register(client)
    statuses = [login(client, password="wrong password entirely").status_code for _ in range(4)]
    assert statuses == [401, 401, 429, 429]
    for _ in range(3):  # an unknown address locks the same way, and costs the same: a job is queued
        login(client, "nobody@example.com", "wrong password entirely")
    assert queued_jobs(app).count("wharf_auth.mail.send_lock_notice") == 2
    run_jobs(settings)
    assert [m["Subject"] for m in inbox.messages] == [mail.SUBJECTS["verify"], mail.SUBJECTS["locked"]]
    assert "account_locked" in [row.type for row in sql(app, "SELECT type FROM auth.account_events")]


def test_make_unlock_lifts_a_lock_and_says_when_there_was_none(make_app: Callable[..., Flask], app: Flask) -> None:
    strict = make_app(login_max_failures=2)
    client = strict.test_client()
    register(client)
    none = strict.test_cli_runner().invoke(args=["unlock", "ada@example.com"])
    assert (none.exit_code, none.output.strip()) == (0, "ada@example.com: was not locked (no failed sign-in counted)")
    for _ in range(2):
        login(client, password="wrong password entirely")
    assert login(client).status_code == 429
    lifted = strict.test_cli_runner().invoke(args=["unlock", " Ada@Example.com "])
    assert lifted.output.strip() == "ada@example.com: unlocked (2 failed sign-ins forgotten)"
    assert login(client).status_code == 200


# --- account events -----------------------------------------------------------------------------


def test_events_are_the_callers_own_newest_first_in_pages(app: Flask, client: FlaskClient) -> None:
    register(client)
    register(client, "bob@example.com")
    login(client, password="wrong password entirely")
    pair = tokens(client)
    assert (
        client.post(
            "/password",
            json={"current_password": PASSWORD, "new_password": "another long passphrase here"},
            headers=bearer(pair),
        ).status_code
        == 204
    )
    bobs = tokens(client, "bob@example.com")
    pair = client.post(
        "/login", json={"email": "ada@example.com", "password": "another long passphrase here"}
    ).get_json()

    first = client.get("/events?limit=2", headers=bearer(pair)).get_json()
    assert [e["type"] for e in first["items"]] == ["sign_in", "password_changed"]
    second = client.get(f"/events?limit=2&cursor={first['next_cursor']}", headers=bearer(pair)).get_json()
    assert [e["type"] for e in second["items"]] == ["sign_in", "sign_in_failed"]
    assert second["next_cursor"] is None
    event = first["items"][0]
    assert set(event) == {"type", "at", "client", "network", "session_id"}
    assert (event["client"], event["network"]) == ("Unknown client", "127.0.0.0/24")
    assert event["session_id"] == jwt.decode(pair["access_token"], options={"verify_signature": False})["fid"]
    # Bob sees his own only; a cursor from Ada's pages gives him nothing.
    assert event_types(client, bobs) == ["sign_in"]
    assert client.get(f"/events?cursor={first['next_cursor']}", headers=bearer(bobs)).get_json()["items"] == []
    for bad in ("limit=0", "limit=101", "limit=x", "cursor=short", "cursor=" + "!" * 22):
        response = client.get(f"/events?{bad}", headers=bearer(pair))
        assert response.status_code == 422, bad
    assert client.get("/events").status_code == 401
    stored = sql(app, "SELECT client, network FROM auth.account_events")
    assert all("127.0.0.1" not in str(row) and PASSWORD not in str(row) for row in stored)


def test_the_worker_removes_events_past_their_retention(
    app: Flask, client: FlaskClient, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    register(client)
    pair = tokens(client)
    sql(app, "UPDATE auth.account_events SET at = now() - interval '31 days'")
    login(client, password="wrong password entirely")
    run_jobs(worker_settings(account_events_retention_days=30))  # RQ's maintenance step runs at start
    assert event_types(client, pair) == ["sign_in_failed"]


def test_housekeeping_keeps_what_is_still_in_use(app: Flask, client: FlaskClient) -> None:
    from wharf_auth import housekeeping

    register(client)
    pair = tokens(client)
    sql(app, "UPDATE auth.sessions SET created_at = now() - interval '400 days'")
    with app.app_context():
        settings: AuthSettings = common.of(app).settings  # type: ignore[assignment]
        removed = housekeeping.sweep(common.of(app).sessions, settings, datetime.now(UTC) + timedelta(days=60))
    assert removed == {"account_events": 0, "refresh_tokens": 1, "sessions": 1}
    assert client.post("/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
