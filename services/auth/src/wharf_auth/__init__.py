"""Wharf auth service: accounts, passwords and tokens."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from wharf_auth.models import SCHEMA
from wharf_auth.settings import AuthSettings
from wharf_common import migrations
from wharf_common.settings import load_settings
from wharf_common.web import create_base_app


def create_app(settings: AuthSettings | None = None) -> Flask:
    from wharf_auth import cli, views

    settings = settings or load_settings(AuthSettings)
    app = create_base_app(__name__, settings)
    migrations.init_app(app, Path(__file__).parent / "migrations", SCHEMA)
    views.init_app(app, settings)
    cli.init_app(app)
    return app
