"""Password reset and email verification: the endpoints, the tokens, the limits, the mail worker.

Mail goes through the real path: the request queues an RQ job in the test Redis, RQ's worker
(wharf_auth.worker, in burst mode) runs it against the test Postgres and hands the message to an
in-process aiosmtpd server, whose messages the tests read.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from sqlalchemy import text
from werkzeug.test import TestResponse

from wharf_auth import mail
from wharf_auth import worker as mail_worker
from wharf_auth.settings import AuthSettings, MailWorkerSettings
from wharf_common import devsecrets
from wharf_common import extensions as common
from wharf_common.db import get_session

from .conftest import Inbox, free_port, run_jobs, token_of

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a completely different passphrase"


def register(client: FlaskClient, email: str = "ada@example.com") -> None:
    response = client.post("/register", json={"email": email, "password": PASSWORD, "name": "Ada"})
    assert response.status_code == 201, response.get_json()


def login(client: FlaskClient, email: str = "ada@example.com", password: str = PASSWORD) -> TestResponse:
    return client.post("/login", json={"email": email, "password": password})


def ask_reset(client: FlaskClient, email: str = "ada@example.com") -> TestResponse:
    return client.post("/password-reset", json={"email": email})


def confirm(client: FlaskClient, token: str, password: str = NEW_PASSWORD) -> TestResponse:
    return client.post("/password-reset/confirm", json={"token": token, "new_password": password})


def mailed_reset_token(client: FlaskClient, inbox: Inbox, settings: MailWorkerSettings) -> str:
    """Register Ada, ask for a reset, run the jobs: the token of the reset mail."""
    register(client)
    assert ask_reset(client).status_code == 202
    run_jobs(settings)
    (message,) = [m for m in inbox.to("ada@example.com") if "password" in m["Subject"]]
    return token_of(message, "reset-password")


def problem_type(response: TestResponse) -> str:
    assert response.status_code == 400, response.get_json()
    assert response.content_type == "application/problem+json"
    return response.get_json()["type"].rsplit("/", 1)[1]


def sql(app: Flask, statement: str, **params: object) -> None:
    with app.app_context():
        session = get_session()
        session.execute(text(statement), params)
        session.commit()


# --- password reset ---------------------------------------------------------------------------


def test_reset_sets_the_password_and_ends_every_session(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    register(client)
    before = login(client).get_json()
    assert ask_reset(client).status_code == 202
    run_jobs(worker_settings())

    (message,) = [m for m in inbox.to("ada@example.com") if "password" in str(m["Subject"])]
    assert message.get_content_type() == "multipart/alternative"
    assert "Ada" in str(message["To"])
    token = token_of(message, "reset-password")
    assert confirm(client, token).status_code == 204

    assert login(client).status_code == 401
    assert login(client, password=NEW_PASSWORD).status_code == 200
    # every session of the account ended: its access and refresh tokens
    assert client.get("/me", headers={"Authorization": f"Bearer {before['access_token']}"}).status_code == 401
    assert client.post("/refresh", json={"refresh_token": before["refresh_token"]}).status_code == 401
    # the link reached the owner of the address
    after = login(client, password=NEW_PASSWORD).get_json()
    me = client.get("/me", headers={"Authorization": f"Bearer {after['access_token']}"}).get_json()
    assert me["email_verified"] is True


def test_a_token_works_once(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    token = mailed_reset_token(client, inbox, worker_settings())
    assert confirm(client, token).status_code == 204
    assert problem_type(confirm(client, token, "yet another long passphrase here")) == "token-used"
    assert login(client, password=NEW_PASSWORD).status_code == 200  # the second attempt changed nothing


def test_an_expired_token_is_refused(
    app: Flask, client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    token = mailed_reset_token(client, inbox, worker_settings())
    with app.app_context():
        (expires_at,) = get_session().execute(
            text("SELECT expires_at FROM auth.account_tokens WHERE purpose = 'reset'")
        )
    issued_for = expires_at[0] - datetime.now(UTC)
    assert timedelta(minutes=29) < issued_for <= timedelta(minutes=30)  # ACCOUNT_TOKEN_TTL_SECONDS' default
    sql(app, "UPDATE auth.account_tokens SET expires_at = now() - interval '1 second'")
    assert problem_type(confirm(client, token)) == "token-expired"
    assert login(client).status_code == 200


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # one character changed
        lambda t: t[:-2],  # truncated
        lambda t: t + "A",  # extended
        lambda t: t.upper(),
        lambda _t: "x",
        lambda _t: "' OR 1=1 --",
    ],
    ids=["changed", "truncated", "extended", "case", "short", "sql"],
)
def test_a_tampered_token_is_refused(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings], tamper: Any
) -> None:
    token = mailed_reset_token(client, inbox, worker_settings())
    assert problem_type(confirm(client, tamper(token))) == "token-invalid"
    assert confirm(client, token).status_code == 204  # the real one still works


def test_only_the_newest_token_works(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    register(client)
    settings = worker_settings()
    ask_reset(client)
    run_jobs(settings)
    ask_reset(client)
    run_jobs(settings)
    first, second = (token_of(m, "reset-password") for m in inbox.to("ada@example.com") if "password" in m["Subject"])
    assert problem_type(confirm(client, first)) == "token-superseded"
    assert confirm(client, second).status_code == 204


def test_the_stored_token_is_only_a_hash(
    app: Flask, client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    token = mailed_reset_token(client, inbox, worker_settings())
    with app.app_context():
        stored = get_session().execute(text("SELECT token_hash FROM auth.account_tokens")).scalars().all()
    assert token not in stored
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in stored)
    assert len(token) == 43  # 32 random bytes, base64url


def test_a_weak_new_password_is_422_and_keeps_the_token(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    token = mailed_reset_token(client, inbox, worker_settings())
    weak = confirm(client, token, "password")
    assert weak.status_code == 422
    assert [e["field"] for e in weak.get_json()["errors"]] == ["new_password"]
    assert confirm(client, token).status_code == 204


def test_a_verification_token_does_not_reset_a_password(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    register(client)
    run_jobs(worker_settings())
    token = token_of(inbox.to("ada@example.com")[-1], "verify-email")
    assert problem_type(confirm(client, token)) == "token-invalid"
    assert client.post("/verify-email", json={"token": token}).status_code == 204


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/password-reset", {"email": "not-an-email"}),
        ("/password-reset", {"email": "ada@example.com", "extra": 1}),
        ("/password-reset/confirm", {"token": "", "new_password": NEW_PASSWORD}),
        ("/password-reset/confirm", {"token": 5, "new_password": NEW_PASSWORD}),
        ("/verify-email", {}),
        ("/verify-email/resend", {"email": ["ada@example.com"]}),
    ],
)
def test_malformed_bodies_are_422_naming_the_field(client: FlaskClient, path: str, body: dict[str, object]) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.get_json()
    assert response.content_type == "application/problem+json"
    assert response.get_json()["errors"]


# --- no enumeration ---------------------------------------------------------------------------


def test_unknown_address_gets_the_same_answer_and_no_mail(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    register(client)
    known, unknown = ask_reset(client), ask_reset(client, "nobody@example.com")
    assert (known.status_code, unknown.status_code) == (202, 202)
    assert known.get_data() == unknown.get_data()
    assert known.headers["Cache-Control"] == unknown.headers["Cache-Control"] == "no-store"
    run_jobs(worker_settings())
    assert inbox.to("nobody@example.com") == []
    assert len([m for m in inbox.to("ada@example.com") if "password" in m["Subject"]]) == 1


@pytest.mark.timing
def test_known_and_unknown_addresses_take_about_the_same_time(
    make_app: Callable[..., Flask], app: Flask, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    """Both paths do the same work in the request (limits counted, one job queued); the lookup is
    the worker's. A loose bound on medians of interleaved runs: it catches a path that does
    visibly more (a database round trip, a hash), not noise."""
    client = make_app(recovery_max_requests=1000, recovery_ip_max_requests=100_000).test_client()
    register(client)
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for _ in range(25):
        for kind, email in (("known", "ada@example.com"), ("unknown", "nobody@example.com")):
            start = time.perf_counter()
            assert ask_reset(client, email).status_code == 202
            timings[kind].append(time.perf_counter() - start)
    known, unknown = statistics.median(timings["known"]), statistics.median(timings["unknown"])
    assert max(known, unknown) < 2 * min(known, unknown), timings


# --- limits -----------------------------------------------------------------------------------


def test_requests_are_limited_per_address(
    client: FlaskClient, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    for _ in range(3):  # RECOVERY_MAX_REQUESTS' default
        assert ask_reset(client, "nobody@example.com").status_code == 202
    limited = ask_reset(client, "nobody@example.com")
    assert limited.status_code == 429
    assert limited.content_type == "application/problem+json"
    assert 1 <= int(limited.headers["Retry-After"]) <= 3600
    assert ask_reset(client, "NOBODY@example.com").status_code == 429  # the same address, normalised
    assert ask_reset(client, "somebody@example.com").status_code == 202  # another address is not affected
    # resending the verification counts apart from resets
    assert client.post("/verify-email/resend", json={"email": "nobody@example.com"}).status_code == 202


def test_requests_are_limited_per_client_address(
    make_app: Callable[..., Flask], app: Flask, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    client = make_app(recovery_ip_max_requests=4).test_client()
    for n in range(4):
        assert ask_reset(client, f"person{n}@example.com").status_code == 202
    assert ask_reset(client, "person9@example.com").status_code == 429
    other = client.post("/password-reset", json={"email": "x@example.com"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 202


def test_no_mail_queue_is_503_and_registration_still_works(
    make_app: Callable[..., Flask], app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    down = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    capsys.readouterr()
    register(down)  # the account exists; the owner asks for the link again later
    # (the app factory routes logging to its JSON lines on stdout, past pytest's log capture)
    assert "verification mail not queued: ConnectionError" in capsys.readouterr().out
    for path in ("/password-reset", "/verify-email/resend"):
        response = down.post(path, json={"email": "ada@example.com"})
        assert response.status_code == 503
        assert response.get_json()["dependency"] == "redis"


# --- mail delivery ----------------------------------------------------------------------------


def test_smtp_outage_is_retried_with_backoff_and_logged_without_secrets(
    app: Flask,
    client: FlaskClient,
    inbox: Inbox,
    worker_settings: Callable[..., MailWorkerSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    register(client)
    run_jobs(worker_settings())  # the verification mail
    inbox.messages.clear()
    ask_reset(client)
    down = worker_settings(smtp_port=free_port(), smtp_timeout_seconds=2)
    caplog.clear()  # (the test's own SMTP server logged the earlier delivery's recipient)
    with caplog.at_level(logging.INFO):
        run_jobs(down)
    assert "ada@example.com" not in caplog.text  # messages and tracebacks, RQ's included
    assert not [r for r in caplog.records if "ada@example.com" in str(vars(r))]  # nor an extra field
    assert "token" not in caplog.text.lower().replace("account_tokens", "")
    assert any(getattr(r, "event", None) == "reset_mail_failed" for r in caplog.records)

    connection = common.of(app).redis
    queue = mail.queue(connection)
    scheduled = ScheduledJobRegistry(queue=queue)
    (job_id,) = scheduled.get_job_ids()
    job = queue.fetch_job(job_id)
    assert job is not None
    assert job.retries_left == len(mail.RETRY_PAUSES) - 1
    pause = scheduled.get_scheduled_time(job) - datetime.now(UTC)
    assert timedelta(seconds=0) < pause <= timedelta(seconds=mail.RETRY_PAUSES[0])
    assert FailedJobRegistry(queue=queue).count == 0

    # The server is back and the pause is over (brought forward): the retry delivers, with a new token.
    queue.schedule_job(job, datetime.now(UTC))
    run_jobs(worker_settings(), with_scheduler=True)
    (message,) = inbox.to("ada@example.com")
    assert confirm(client, token_of(message, "reset-password")).status_code == 204
    with app.app_context():
        states = get_session().execute(
            text(
                "SELECT used_at IS NOT NULL, superseded_at IS NOT NULL FROM auth.account_tokens WHERE purpose = 'reset'"
            )
        )
        assert sorted(tuple(row) for row in states) == [(False, True), (True, False)]  # the unsent one superseded


def test_a_database_outage_is_retried_and_logged_without_the_address(
    app: Flask,
    client: FlaskClient,
    worker_settings: Callable[..., MailWorkerSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ask_reset(client, "ada@example.com")
    with caplog.at_level(logging.INFO):
        run_jobs(worker_settings(database_url=f"postgresql://auth@127.0.0.1:{free_port()}/wharf"))
    assert "ada@example.com" not in caplog.text  # SQLAlchemy's errors would carry it as a parameter
    assert not [r for r in caplog.records if "ada@example.com" in str(vars(r))]  # RQ's `arguments` field
    assert "MailJobFailed: database error" in caplog.text
    (job_id,) = ScheduledJobRegistry(queue=mail.queue(common.of(app).redis)).get_job_ids()
    assert job_id


def test_the_message_has_both_bodies_from_the_templates(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    settings = worker_settings(public_url="https://app.example.com/base/", mail_from="Example <mail@example.com>")
    client.post("/register", json={"email": "ada@example.com", "password": PASSWORD, "name": "<b>Ada</b>"})
    run_jobs(settings)
    (message,) = inbox.to("ada@example.com")
    assert message["From"] == "Example <mail@example.com>"
    assert message["Message-ID"].endswith("@example.com>")
    plain = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "https://app.example.com/base/verify-email#token=" in plain
    assert "30 minutes" in plain
    assert "30 minutes" in html
    assert "&lt;b&gt;Ada&lt;/b&gt;" in html
    assert "<b>Ada</b>" not in html
    assert "Hello <b>Ada</b>," in plain


def test_redis_users_have_what_queueing_and_working_need_and_no_more(
    app: Flask, client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    """The ACL the stack's Redis loads (wharf_common.devsecrets): auth may queue a mail, the
    worker's user may run it, and the worker's user reaches none of auth's own keys."""
    admin = common.of(app).redis
    rules = devsecrets.redis_acl("auth-test-password", "api-test-password", "mail-test-password")
    users: dict[str, str] = {}
    clients: list[redis.Redis] = []
    for line in rules.splitlines():
        _, name, *rule = line.split()
        if name != "default":
            admin.execute_command("ACL", "SETUSER", f"wharf-test-{name}", "reset", *rule)
            users[name] = f"wharf-test-{name}"
    try:
        url = str(app_settings(app).redis_url)
        as_auth = redis.Redis.from_url(url, username=users["auth"], password="auth-test-password")
        clients.append(as_auth)
        mail.enqueue(as_auth, "verify", "ada@example.com")  # no account: nothing is sent, the job still runs
        register(client)
        mail.enqueue(as_auth, "reset", "ada@example.com")
        run_jobs(worker_settings(redis_username=users["auth-mail"], redis_password="mail-test-password"))
        assert [m["Subject"] for m in inbox.to("ada@example.com")].count(mail.SUBJECTS["reset"]) == 1
        as_worker = redis.Redis.from_url(url, username=users["auth-mail"], password="mail-test-password")
        clients.append(as_worker)
        for command in (
            ("GET", "auth:login-failures:x"),
            ("SET", "auth:x", "1"),
            ("PUBLISH", "wharf:revocations", "x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_worker.execute_command(*command)
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_auth.execute_command("GET", "rq:worker:someone")
    finally:
        for user in users.values():
            admin.execute_command("ACL", "DELUSER", user)
        for client_of_user in clients:
            client_of_user.close()


def app_settings(app: Flask) -> AuthSettings:
    return common.of(app).settings  # type: ignore[return-value]


def test_worker_touches_its_heartbeat_file_after_each_heartbeat_it_sent(
    worker_settings: Callable[..., MailWorkerSettings], tmp_path: Path
) -> None:
    """The container's health check reads this file's age (compose and Kubernetes alike)."""
    heartbeat_file = tmp_path / "heartbeat"
    connection = mail_worker.connect(worker_settings())
    try:
        worker = mail_worker.make_worker(connection, heartbeat_file)
        worker.register_birth()
        try:
            assert not heartbeat_file.exists()
            worker.heartbeat()
            assert time.time() - heartbeat_file.stat().st_mtime < 5
            os.utime(heartbeat_file, (time.time() - 600, time.time() - 600))
            with connection.pipeline() as pipeline:
                worker.heartbeat(pipeline=pipeline)  # only queued: the file waits for a sent one
            assert time.time() - heartbeat_file.stat().st_mtime > 500
            worker.heartbeat()
            assert time.time() - heartbeat_file.stat().st_mtime < 5
        finally:
            worker.register_death()
    finally:
        connection.close()


# --- email verification -----------------------------------------------------------------------


def claims(client: FlaskClient) -> dict[str, Any]:
    token = login(client).get_json()["access_token"]
    return jwt.decode(token, options={"verify_signature": False})


def test_registration_mails_a_verification_link(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    register(client)
    assert claims(client)["email_verified"] is False
    access = login(client).get_json()["access_token"]
    assert client.get("/me", headers={"Authorization": f"Bearer {access}"}).get_json()["email_verified"] is False

    run_jobs(worker_settings())
    (message,) = inbox.to("ada@example.com")
    token = token_of(message, "verify-email")
    assert client.post("/verify-email", json={"token": token}).status_code == 204
    assert problem_type(client.post("/verify-email", json={"token": token})) == "token-used"
    assert client.get("/me", headers={"Authorization": f"Bearer {access}"}).get_json()["email_verified"] is True
    assert claims(client)["email_verified"] is True


def test_resend_mails_unverified_accounts_only(
    client: FlaskClient, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    register(client)
    settings = worker_settings()
    run_jobs(settings)
    assert client.post("/verify-email/resend", json={"email": "ada@example.com"}).status_code == 202
    run_jobs(settings)
    first, second = (token_of(m, "verify-email") for m in inbox.to("ada@example.com"))
    assert problem_type(client.post("/verify-email", json={"token": first})) == "token-superseded"
    assert client.post("/verify-email", json={"token": second}).status_code == 204
    inbox.messages.clear()
    assert client.post("/verify-email/resend", json={"email": "ada@example.com"}).status_code == 202
    run_jobs(settings)
    assert inbox.messages == []  # verified already: nothing to send


def test_unverified_accounts_may_not_sign_in_when_the_setting_says_so(
    make_app: Callable[..., Flask], app: Flask, inbox: Inbox, worker_settings: Callable[..., MailWorkerSettings]
) -> None:
    client = make_app(allow_unverified_login=False).test_client()
    register(client)
    refused = login(client)
    assert refused.status_code == 403
    assert refused.get_json()["type"].endswith("/email-not-verified")
    assert login(client, password="wrong password entirely").status_code == 401  # no hint without the password
    run_jobs(worker_settings())
    token = token_of(inbox.to("ada@example.com")[-1], "verify-email")
    assert client.post("/verify-email", json={"token": token}).status_code == 204
    assert login(client).status_code == 200


def test_the_openapi_document_shows_the_recovery_operations(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in ("/password-reset", "/password-reset/confirm", "/verify-email", "/verify-email/resend"):
        assert "post" in paths[path], path
    assert {"202", "429"} <= set(paths["/password-reset"]["post"]["responses"])
    assert "400" in paths["/password-reset/confirm"]["post"]["responses"]
    me = client.get("/openapi.json").get_json()["components"]["schemas"]["MeOut"]
    assert "email_verified" in me["properties"]
