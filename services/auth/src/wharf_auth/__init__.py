"""Wharf auth service: accounts, passwords and tokens."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from wharf_auth.models import SCHEMA
from wharf_auth.settings import AuthSettings
from wharf_common import migrations, openapi
from wharf_common.settings import load_settings
from wharf_common.web import create_base_app

VERSION = "1.0.0"


def create_app(settings: AuthSettings | None = None) -> Flask:
    from wharf_auth import cli, views

    settings = settings or load_settings(AuthSettings)
    app = create_base_app(__name__, settings)
    migrations.init_app(app, Path(__file__).parent / "migrations", SCHEMA)
    views.init_app(app, settings)
    cli.init_app(app)

    @app.get("/openapi.json")
    def openapi_document() -> ResponseReturnValue:
        description = "Accounts and tokens. Every error is an RFC 9457 problem document."
        return jsonify(openapi.build(app, title="Wharf auth", version=VERSION, description=description))

    return app
