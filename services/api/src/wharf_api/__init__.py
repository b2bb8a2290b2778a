"""Wharf api service: the REST resource API."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from wharf_api import cli, users
from wharf_api.cache import CONFIRM_SECONDS, UserCache
from wharf_api.models import SCHEMA
from wharf_api.settings import ApiSettings
from wharf_common import authn, db, migrations, openapi
from wharf_common.cache import tracked_copies
from wharf_common.revocation import RevocationSet, load_from_database
from wharf_common.settings import load_settings
from wharf_common.tokens import JwksCache, TokenVerifier, url_fetcher
from wharf_common.web import create_base_app

VERSION = "1.0.0"


def _authenticator(app: Flask, settings: ApiSettings) -> authn.Authenticator:
    """Tokens are verified here, against auth's public keys (fetched rarely) and revocation list."""
    keys = JwksCache(
        url_fetcher(str(settings.auth_jwks_url)),
        ttl=settings.jwks_cache_seconds,
        min_refresh_interval=settings.jwks_min_refresh_seconds,
    )
    verifier = TokenVerifier(
        keys, issuer=settings.token_issuer, audience=settings.token_audience, leeway=settings.token_leeway_seconds
    )
    # Its own single connection: a request pool under load must not starve the re-sync.
    sync_engine = db.make_engine(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    revocations = RevocationSet(
        lambda: load_from_database(sync_engine),
        app.extensions["wharf.redis"],
        sync_interval=settings.revocation_sync_seconds,
        max_staleness=settings.revocation_max_staleness_seconds,
    )
    return authn.Authenticator(verifier, revocations)


def create_app(settings: ApiSettings | None = None) -> Flask:
    settings = settings or load_settings(ApiSettings)
    app = create_base_app(__name__, settings)
    migrations.init_app(app, Path(__file__).parent / "migrations", SCHEMA)
    authn.init_app(app, _authenticator(app, settings))
    app.extensions["wharf.api.cache"] = UserCache(
        app.extensions["wharf.redis"],
        settings.cache_ttl_seconds,
        copies=tracked_copies(settings, max_entries=10_000, confirm_seconds=CONFIRM_SECONDS)
        if settings.cache_ttl_seconds
        else None,
    )
    app.register_blueprint(users.bp)
    cli.init_app(app)

    @app.get("/openapi.json")
    def openapi_document() -> ResponseReturnValue:
        return jsonify(
            openapi.build(
                app, title="Wharf API", version=VERSION, description="The users resource. Errors are RFC 9457."
            )
        )

    return app
