from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from wharf_auth import create_app, extensions, mail
from wharf_auth import worker as mail_worker
from wharf_auth.models import Base
from wharf_auth.settings import AuthSettings, MailWorkerSettings
from wharf_common import extensions as common
from wharf_common.tokens import public_jwk

MFA_KEY = "a test key for second-factor secrets, 32+ characters"


def write_signing_key(directory: Path, name: str) -> str:
    """A new Ed25519 key file ``name`` in ``directory``; returns its kid. The directory's mtime moves
    on even where timestamps are coarse, so a running KeyRing re-reads it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    before = directory.stat().st_mtime
    (directory / name).write_bytes(pem)
    os.utime(directory, (before + 1, before + 1))
    return public_jwk(key.public_key())["kid"]


@pytest.fixture
def signing_key_writer() -> Callable[[Path, str], str]:
    """``write_signing_key`` for tests (they cannot import this module)."""
    return write_signing_key


@pytest.fixture(scope="session")
def signing_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("signing-keys")
    write_signing_key(directory, "20260101T000000Z.pem")
    return directory


@pytest.fixture(scope="session")
def auth_settings_kwargs(
    connection_settings: Callable[[str], dict[str, object]], signing_keys_dir: Path
) -> dict[str, object]:
    return {**connection_settings("auth"), "signing_keys_dir": signing_keys_dir, "mfa_encryption_key": MFA_KEY}


@pytest.fixture(scope="session")
def auth_settings(auth_settings_kwargs: dict[str, object]) -> AuthSettings:
    return AuthSettings(**auth_settings_kwargs)


@pytest.fixture(scope="session")
def migrated_app(auth_settings: AuthSettings) -> Flask:
    app = create_app(auth_settings)
    assert app.test_cli_runner().invoke(args=["db", "upgrade"]).exit_code == 0
    return app


def clean(app: Flask, truncate_tables: Callable[..., None]) -> None:
    truncate_tables(app, Base.metadata)
    redis = common.of(app).redis
    keys = list(redis.scan_iter("auth:*"))
    if keys:
        redis.delete(*keys)
    extensions.of(app).limiter.local.clear()
    extensions.of(app).recovery_limiter.local.clear()


@pytest.fixture
def app(migrated_app: Flask, truncate_tables: Callable[..., None]) -> Iterator[Flask]:
    clean(migrated_app, truncate_tables)
    yield migrated_app
    clean(migrated_app, truncate_tables)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_app(auth_settings_kwargs: dict[str, object], migrated_app: Flask) -> Iterator[Callable[..., Flask]]:
    """A second app with overridden settings (same database, already migrated)."""
    apps: list[Flask] = []

    def build(**overrides: object) -> Flask:
        app = create_app(AuthSettings(**{**auth_settings_kwargs, **overrides}))
        apps.append(app)
        return app

    yield build
    for app in apps:
        common.of(app).engine.dispose()
        common.of(app).redis.close()


# --- mail: RQ's worker runs the queued jobs against an in-process SMTP server ---------------------

TOKEN_IN_LINK = re.compile(r"/(reset-password|verify-email|sign-in-alert)#token=([A-Za-z0-9_-]{43})\b")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """aiosmtpd handler: keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(BytesParser(policy=policy.default).parsebytes(envelope.content))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def inbox(smtp: tuple[Inbox, int]) -> Inbox:
    smtp[0].messages.clear()
    return smtp[0]


def _clear_queue(app: Flask) -> None:
    client = common.of(app).redis
    keys = list(client.scan_iter("rq:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def worker_settings(
    app: Flask, auth_settings_kwargs: dict[str, object], smtp: tuple[Inbox, int]
) -> Iterator[Callable[..., MailWorkerSettings]]:
    """``worker_settings(**overrides)``: the mail worker's settings, configured for the jobs."""
    _clear_queue(app)
    engines = []

    def configure(**overrides: object) -> MailWorkerSettings:
        defaults = {"smtp_host": "127.0.0.1", "smtp_port": smtp[1], "smtp_security": "none"}
        settings = MailWorkerSettings(**{**defaults, **auth_settings_kwargs, **overrides})
        engines.append(mail.configure(settings).sessions.kw["bind"])
        return settings

    configure()
    yield configure
    for engine in engines:
        engine.dispose()
    _clear_queue(app)


def run_jobs(settings: MailWorkerSettings, *, with_scheduler: bool = False) -> None:
    """RQ's worker as the container runs it, in burst mode: every queued job, then return."""
    connection = mail_worker.connect(settings)
    try:
        mail_worker.make_worker(connection).work(burst=True, with_scheduler=with_scheduler)
    finally:
        connection.close()


def token_of(message: EmailMessage, page: str) -> str:
    """The token in the message's link; the plain-text and HTML bodies carry the same link."""
    plain = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    (found,) = TOKEN_IN_LINK.findall(plain)
    assert found[0] == page
    assert f"{page}#token={found[1]}" in html
    return found[1]
