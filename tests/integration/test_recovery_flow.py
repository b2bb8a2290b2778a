"""Issue 21: password reset and email verification through nginx, completed with the links the
mail worker sent to the development mail sink (read back with `make mail` and the sink's JSON)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from typing import Any

import jwt
import pytest
import requests

from .conftest import ISSUED_SECRETS, PASSWORD, Stack, register, run_make, wait_healthy

pytestmark = pytest.mark.integration

NEW_PASSWORD = "a completely different passphrase"
LINK = re.compile(r"/(reset-password|verify-email)#token=([A-Za-z0-9_-]{43})\b")
MAIL_WAIT_SECONDS = 60


def sink(stack: Stack) -> list[dict[str, Any]]:
    """Every message the development sink holds, oldest first."""
    out = stack.compose("exec", "-T", "mail-sink", "python", "/app/mailsink.py", "json", timeout=60).stdout
    return json.loads(out)


def mails_to(stack: Stack, address: str, subject: str, count: int = 1) -> list[dict[str, Any]]:
    """The messages to ``address`` whose subject contains ``subject``, once ``count`` have arrived."""
    deadline = time.monotonic() + MAIL_WAIT_SECONDS
    while True:
        found = [m for m in sink(stack) if address in m["to"] and subject in m["subject"]]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{len(found)} of {count} mails to {address} arrived"
            return found
        time.sleep(0.5)


def token_of(message: dict[str, Any], page: str) -> str:
    ((found_page, token),) = LINK.findall(message["text"])
    assert found_page == page
    assert f"{page}#token={token}" in message["html"]
    ISSUED_SECRETS.add(token)  # the log-leak check looks for it too
    return token


def login(stack: Stack, http: requests.Session, email: str, password: str = PASSWORD) -> requests.Response:
    return http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": password}, timeout=10)


def problem_type(response: requests.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    return response.json()["type"].rsplit("/", 1)[1]


def test_password_reset_completes_through_the_edge(stack: Stack, http: requests.Session) -> None:
    email = register(stack, http)
    before = login(stack, http, email).json()
    ISSUED_SECRETS.add(before["refresh_token"])
    asked = http.post(f"{stack.base_url}/auth/password-reset", json={"email": email}, timeout=10)
    nobody = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    unknown = http.post(f"{stack.base_url}/auth/password-reset", json={"email": nobody}, timeout=10)
    assert (asked.status_code, unknown.status_code) == (202, 202)
    assert asked.json() == unknown.json()

    (message,) = mails_to(stack, email, "password")
    token = token_of(message, "reset-password")
    confirm = {"token": token, "new_password": NEW_PASSWORD}
    assert http.post(f"{stack.base_url}/auth/password-reset/confirm", json=confirm, timeout=10).status_code == 204
    again = http.post(f"{stack.base_url}/auth/password-reset/confirm", json=confirm, timeout=10)
    assert problem_type(again) == "token-used"

    assert login(stack, http, email).status_code == 401
    assert login(stack, http, email, NEW_PASSWORD).status_code == 200
    # Every earlier session ended at auth and, through the revocation push, at api.
    old = {"Authorization": f"Bearer {before['access_token']}"}
    assert http.get(f"{stack.base_url}/auth/me", headers=old, timeout=10).status_code == 401
    deadline = time.monotonic() + 10
    while (status := http.get(f"{stack.base_url}/api/users", headers=old, timeout=10).status_code) != 401:
        assert time.monotonic() < deadline, f"api still accepts a token of an ended session ({status})"
        time.sleep(0.2)
    refreshed = http.post(f"{stack.base_url}/auth/refresh", json={"refresh_token": before["refresh_token"]}, timeout=10)
    assert refreshed.status_code == 401


def test_email_verification_completes_through_the_edge(stack: Stack, http: requests.Session) -> None:
    email = register(stack, http)
    access = login(stack, http, email).json()["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    assert http.get(f"{stack.base_url}/auth/me", headers=headers, timeout=10).json()["email_verified"] is False

    (message,) = mails_to(stack, email, "Confirm")
    token = token_of(message, "verify-email")
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    response = http.post(f"{stack.base_url}/auth/verify-email", json={"token": tampered}, timeout=10)
    assert problem_type(response) == "token-invalid"
    assert http.post(f"{stack.base_url}/auth/verify-email", json={"token": token}, timeout=10).status_code == 204

    assert http.get(f"{stack.base_url}/auth/me", headers=headers, timeout=10).json()["email_verified"] is True
    fresh = login(stack, http, email).json()["access_token"]
    assert jwt.decode(fresh, options={"verify_signature": False})["email_verified"] is True


def test_an_smtp_outage_delays_the_mail_and_loses_none(stack: Stack, http: requests.Session) -> None:
    """The request succeeds while the SMTP server is away; the worker's retry (its first pause is
    10 s) delivers once the server is back."""
    email = register(stack, http)
    mails_to(stack, email, "Confirm")
    stack.compose("stop", "mail-sink", timeout=120)
    try:
        asked = http.post(f"{stack.base_url}/auth/password-reset", json={"email": email}, timeout=10)
        assert asked.status_code == 202
        time.sleep(4)  # the first attempt meets no server
    finally:
        stack.compose("up", "-d", "--wait", "mail-sink", timeout=180)
    (message,) = mails_to(stack, email, "password")
    worker_log = stack.compose("logs", "--no-color", "auth-mail", timeout=60).stdout
    assert "reset_mail_failed" in worker_log  # the first attempt did fail
    assert email not in worker_log
    confirm = {"token": token_of(message, "reset-password"), "new_password": NEW_PASSWORD}
    assert http.post(f"{stack.base_url}/auth/password-reset/confirm", json=confirm, timeout=10).status_code == 204


def test_mail_queued_while_the_worker_is_down_is_sent_when_it_is_back(stack: Stack, http: requests.Session) -> None:
    email = register(stack, http)
    mails_to(stack, email, "Confirm")
    stack.compose("kill", "auth-mail", timeout=120)  # a crash, not a graceful stop
    try:
        asked = http.post(f"{stack.base_url}/auth/password-reset", json={"email": email}, timeout=10)
        assert asked.status_code == 202  # the request never waits for the worker
    finally:
        stack.compose("up", "-d", "--wait", "auth-mail", timeout=180)
    (message,) = mails_to(stack, email, "password")
    token_of(message, "reset-password")


def test_resend_is_limited_per_address(stack: Stack, http: requests.Session) -> None:
    email = f"limit-{uuid.uuid4().hex[:8]}@example.com"
    statuses = [
        http.post(f"{stack.base_url}/auth/verify-email/resend", json={"email": email}, timeout=10).status_code
        for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]  # RECOVERY_MAX_REQUESTS: 3 an hour


def test_make_mail_lists_and_shows_what_was_sent(stack: Stack, http: requests.Session) -> None:
    email = register(stack, http)
    mails_to(stack, email, "Confirm")

    def make(*args: str) -> str:
        return run_make(stack, "mail", *args).stdout

    listed = [line for line in make().splitlines() if email in line]
    assert len(listed) == 1
    assert "Confirm your email address" in listed[0]
    number = listed[0].split()[0]
    shown = make(f"N={number}")
    assert f"To: It <{email}>" in shown
    token_of({"text": shown, "html": shown}, "verify-email")


def test_the_mail_worker_and_the_sink_are_hardened_and_the_sink_is_internal(stack: Stack) -> None:
    ids = {service: stack.container_id(service) for service in ("auth-mail", "mail-sink")}
    for service, container in ids.items():
        info = json.loads(
            subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
        )[0]
        wait_healthy(container, timeout=0)  # its own check passes now (Docker's may not have run yet)
        networks = info["NetworkSettings"]["Networks"]
        assert all(name.endswith(("_mail", "_data")) for name in networks), (service, list(networks))
    # nginx (the public door) cannot reach the sink, and the sink publishes nothing
    connect = "exec 3<>/dev/tcp/mail-sink/1025"
    probe = subprocess.run(
        ["docker", "exec", stack.container_id("nginx"), "timeout", "3", "bash", "-c", connect],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0
