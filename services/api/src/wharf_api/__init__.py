"""Wharf api service: the REST resource API."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from wharf_api import cli, extensions, resource, views
from wharf_api.models import SCHEMA
from wharf_api.settings import ApiSettings
from wharf_common import authn, migrations, openapi
from wharf_common import extensions as common
from wharf_common.cache import Cache, make_redis
from wharf_common.revocation import RevocationSet, loader
from wharf_common.settings import load_settings
from wharf_common.tokens import JwksCache, TokenVerifier, fetch_json
from wharf_common.web import create_base_app

VERSION = "1.0.0"
# Refetch the JWKS on an unknown key id at most this often (auth's SIGNING_KEY_ACTIVATION_SECONDS
# must exceed it by a second, so a rotated key is fetched before it signs).
JWKS_MIN_REFRESH_SECONDS = 5.0
TOKEN_LEEWAY_SECONDS = 30.0


def _authenticator(app: Flask, settings: ApiSettings) -> authn.Authenticator:
    """Tokens are verified here, against auth's public keys (fetched rarely) and revocation list."""
    auth_url = str(settings.auth_url).rstrip("/")
    keys = JwksCache(fetch_json(f"{auth_url}/.well-known/jwks.json"), min_refresh_interval=JWKS_MIN_REFRESH_SECONDS)
    verifier = TokenVerifier(
        keys, issuer=settings.token_issuer, audience=settings.token_audience, leeway=TOKEN_LEEWAY_SECONDS
    )
    revocations = RevocationSet(
        loader(f"{auth_url}/internal/revocations"),
        common.of(app).redis,
        max_staleness=settings.revocation_max_staleness_seconds,
    )
    return authn.Authenticator(verifier, revocations)


def create_app(settings: ApiSettings | None = None) -> Flask:
    settings = settings or load_settings(ApiSettings)
    app = create_base_app(__name__, settings)
    migrations.init_app(app, Path(__file__).parent / "migrations", SCHEMA)
    authn.init_app(app, _authenticator(app, settings))
    cache = Cache(
        make_redis(settings, local_copies=True),
        namespace="api",
        ttl=settings.cache_ttl_seconds,
        plain_client=common.of(app).redis,
    )
    extensions.init_app(app, extensions.ApiExtensions(cache))
    views.init_app(app)
    cli.init_app(app)

    @app.get("/openapi.json")
    def openapi_document() -> ResponseReturnValue:
        return jsonify(
            openapi.build(
                app,
                title="Wharf API",
                version=VERSION,
                description=resource.describe(app),
                public_url=str(settings.edge_public_url) if settings.edge_public_url else None,
                required_parameters=frozenset({"If-Match"}) if settings.require_if_match else frozenset(),
            )
        )

    return app
