"""Wharf api service: the REST resource API."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from wharf_api import users
from wharf_api.models import SCHEMA
from wharf_api.settings import ApiSettings
from wharf_common import migrations
from wharf_common.settings import load_settings
from wharf_common.web import create_base_app


def create_app(settings: ApiSettings | None = None) -> Flask:
    settings = settings or load_settings(ApiSettings)
    app = create_base_app(__name__, settings)
    migrations.init_app(app, Path(__file__).parent / "migrations", SCHEMA)
    app.register_blueprint(users.bp)
    return app
