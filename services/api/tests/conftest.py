"""The api under test, with the real auth service as its token issuer.

auth runs in a thread on a real HTTP port (the api fetches its JWKS over HTTP, as in the stack) and
issues real tokens; both share the session's Postgres and Redis containers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from examples.notes import migration as notes_migration
from examples.notes import notes
from wharf_api import create_app, resource
from wharf_api.models import Base as ApiBase
from wharf_api.settings import ApiSettings
from wharf_auth import extensions as auth_extensions
from wharf_auth.models import Base as AuthBase
from wharf_common import authn
from wharf_common import extensions as common
from wharf_common.db import get_session
from wharf_common.revocation import RevocationsUnavailable

PASSWORD = "correct horse battery staple 42"


@pytest.fixture(scope="session")
def auth_app(
    connection_settings: Callable[[str], dict[str, object]], tmp_path_factory: pytest.TempPathFactory
) -> Flask:
    from wharf_auth import create_app as create_auth_app
    from wharf_auth.settings import AuthSettings

    keys_dir: Path = tmp_path_factory.mktemp("api-test-signing-keys")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (keys_dir / "20260101T000000Z.pem").write_bytes(pem)
    settings = AuthSettings(
        **connection_settings("auth"),
        signing_keys_dir=keys_dir,
        mfa_encryption_key="api tests' auth: a 32+ character key",
    )
    app = create_auth_app(settings)
    assert app.test_cli_runner().invoke(args=["db", "upgrade"]).exit_code == 0
    return app


@pytest.fixture(scope="session")
def auth_url(auth_app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, auth_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def api_settings(connection_settings: Callable[[str], dict[str, object]], auth_url: str) -> ApiSettings:
    return ApiSettings(
        **connection_settings("api"),
        auth_url=auth_url,
    )


def _shut_down(app: Flask) -> None:
    authn.authenticator(app).revocations.stop()  # type: ignore[union-attr]
    common.of(app).engine.dispose()


def _synced(app: Flask) -> Flask:
    """``app`` once its revocation list has synced from auth. A process's first authenticated
    request syncs it (a 503 if auth does not answer within 2 s, as in the stack while auth starts,
    and then again every second): a session app starts its tests with it done."""
    revocations = authn.authenticator(app).revocations
    deadline = time.monotonic() + 60
    while True:
        try:
            revocations.is_revoked({})
            return app
        except RevocationsUnavailable:
            assert time.monotonic() < deadline, "the revocation list did not sync from auth within 60 s"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def migrated_app(api_settings: ApiSettings) -> Iterator[Flask]:
    app = create_app(api_settings)
    assert app.test_cli_runner().invoke(args=["db", "upgrade"]).exit_code == 0
    yield _synced(app)
    _shut_down(app)


@pytest.fixture
def make_api(api_settings: ApiSettings, app: Flask) -> Iterator[Callable[..., Flask]]:
    """Another api app with some settings changed (e.g. pointing at a fault-injecting proxy)."""
    apps: list[Flask] = []

    def build(**changes: object) -> Flask:
        apps.append(create_app(api_settings.model_copy(update=changes)))
        return apps[-1]

    yield build
    for built in apps:
        _shut_down(built)


@pytest.fixture(scope="session")
def run_migration() -> Callable[[Flask, Callable[[], None]], None]:
    """``run_migration(app, script.upgrade)``: one migration script's step (``upgrade`` or
    ``downgrade``) on the app's database, with Alembic's operations, in one transaction."""

    def run(app: Flask, step: Callable[[], None]) -> None:
        engine = common.of(app).engine
        with engine.begin() as connection, Operations.context(MigrationContext.configure(connection)):
            step()

    return run


@pytest.fixture(scope="session")
def notes_app(migrated_app: Flask, api_settings: ApiSettings, run_migration: Callable[..., None]) -> Iterator[Flask]:
    """The api with the example resource of docs/adding-a-resource.md mounted (examples/notes/), its
    table made by the example's own migration, on the service's migrated schema."""
    app = create_app(api_settings)
    resource.mount(app, notes.RESOURCE)
    run_migration(app, notes_migration.upgrade)
    yield _synced(app)
    run_migration(app, notes_migration.downgrade)
    _shut_down(app)


def _clean(api: Flask, auth: Flask, truncate_tables: Callable[..., None]) -> None:
    # The service's tables, and those of the resources mounted from elsewhere (the example's).
    metadatas = [ApiBase.metadata, *(r.table.metadata for r in resource.registered(api))]
    for metadata in {id(m): m for m in metadatas}.values():
        truncate_tables(api, metadata)
    truncate_tables(auth, AuthBase.metadata)
    redis = common.of(api).redis
    keys = list(redis.scan_iter("api:*")) + list(redis.scan_iter("auth:*"))
    if keys:
        redis.delete(*keys)
    auth_extensions.of(auth).limiter.local.clear()


@pytest.fixture
def app(request: pytest.FixtureRequest, auth_app: Flask, truncate_tables: Callable[..., None]) -> Iterator[Flask]:
    """The api a test runs against, emptied before and after: the service's (``migrated_app``), or
    the session app named by indirect parametrisation (``notes_app``)."""
    api: Flask = request.getfixturevalue(getattr(request, "param", "migrated_app"))
    _clean(api, auth_app, truncate_tables)
    yield api
    _clean(api, auth_app, truncate_tables)


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class Account:
    id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def sign_up(app: Flask, auth_app: Flask) -> Callable[..., Account]:
    """Register an account at auth (optionally an admin) and log it in."""
    auth = auth_app.test_client()

    def create(email: str, *, admin: bool = False) -> Account:
        registered = auth.post("/register", json={"email": email, "password": PASSWORD, "name": email.split("@")[0]})
        assert registered.status_code == 201, registered.get_json()
        if admin:
            with auth_app.app_context():
                session = get_session()
                session.execute(text("UPDATE auth.accounts SET roles = '{user,admin}' WHERE email = :e"), {"e": email})
                session.commit()
        tokens = auth.post("/login", json={"email": email, "password": PASSWORD}).get_json()
        return Account(registered.get_json()["id"], email, tokens["access_token"], tokens["refresh_token"])

    return create


class AuthedClient:
    """A test client that sends one account's token on every request."""

    def __init__(self, client: FlaskClient, account: Account) -> None:
        self.client = client
        self.account = account

    def open(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = {**self.account.headers, **kwargs.pop("headers", {})}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open("DELETE", path, **kwargs)


@pytest.fixture
def authed(app: Flask) -> Callable[..., AuthedClient]:
    """``authed(account, app=None)``: a client of ``app`` (default: the api) acting as ``account``."""

    def build(account: Account, other_app: Flask | None = None) -> AuthedClient:
        return AuthedClient((other_app or app).test_client(), account)

    return build


@pytest.fixture
def client(authed: Callable[..., AuthedClient], sign_up: Callable[..., Account]) -> AuthedClient:
    return authed(sign_up("owner@example.com"))


@pytest.fixture
def password() -> str:
    return PASSWORD
