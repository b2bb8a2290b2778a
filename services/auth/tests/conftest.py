from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from wharf_auth import create_app, extensions
from wharf_auth.models import Base
from wharf_auth.settings import AuthSettings
from wharf_common import extensions as common
from wharf_common.tokens import public_jwk


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
    return {**connection_settings("auth"), "signing_keys_dir": signing_keys_dir}


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
