"""Wharf auth service: accounts, passwords and tokens."""

from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from wharf_auth import cli, clients, extensions, sessions, views
from wharf_auth import passwords as policy
from wharf_auth.keys import KeyRing, SigningKeyError
from wharf_auth.limits import RECOVERY_PREFIX, LoginLimiter
from wharf_auth.mfa import SecretBox
from wharf_auth.models import SCHEMA
from wharf_auth.settings import AuthSettings
from wharf_common import authn, migrations, openapi
from wharf_common import extensions as common
from wharf_common.settings import CONFIG_ERROR_EXIT_CODE, load_settings
from wharf_common.tokens import JwksCache, TokenVerifier
from wharf_common.web import create_base_app

VERSION = "1.0.0"


def _keyring(settings: AuthSettings) -> KeyRing:
    try:
        return KeyRing(settings.signing_keys_dir, activation_seconds=settings.signing_key_activation_seconds)
    except SigningKeyError as exc:  # a configuration error: one line, then exit like load_settings
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(CONFIG_ERROR_EXIT_CODE) from None


def create_app(settings: AuthSettings | None = None) -> Flask:
    settings = settings or load_settings(AuthSettings)
    app = create_base_app(__name__, settings)
    migrations.init_app(app, Path(__file__).parent / "migrations", SCHEMA)
    keyring = _keyring(settings)
    hasher = policy.make_hasher(settings.argon2_memory_kib, settings.argon2_time_cost)
    redis = common.of(app).redis
    limiter = LoginLimiter(redis, settings.login_window_seconds)
    recovery_limiter = LoginLimiter(redis, settings.recovery_window_seconds, prefix=RECOVERY_PREFIX)
    mfa_secrets = SecretBox(settings.mfa_encryption_key.get_secret_value())
    extensions.init_app(
        app, extensions.AuthExtensions(keyring, policy.Passwords(hasher), limiter, recovery_limiter, mfa_secrets)
    )
    clients.warm_up()
    # Our own keys, read locally (no HTTP round trip): a new key is seen at once (an unknown kid
    # re-reads them), a removed one within a second; between re-reads the same key objects, so a
    # token verified once is not verified again (VerifiedTokens). Revocations are checked in our own
    # database, so a logout takes effect here at once.
    verifier = TokenVerifier(
        JwksCache(keyring.jwks, ttl=1, min_refresh_interval=0),
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        leeway=5,
    )
    authn.init_app(app, authn.Authenticator(verifier, sessions.DatabaseCheck()))
    views.init_app(app)
    cli.init_app(app)

    @app.get("/openapi.json")
    def openapi_document() -> ResponseReturnValue:
        description = "Accounts and tokens. Every error is an RFC 9457 problem document."
        public_url = str(settings.edge_public_url) if settings.edge_public_url else None
        document = openapi.build(
            app, title="Wharf auth", version=VERSION, description=description, public_url=public_url
        )
        return jsonify(document)

    return app
