"""Typed access to what every app factory builds (settings, database, Redis), under one key in
``app.extensions``. A module that adds something of its own keeps it under its own key (authn: the
authenticator), so that nothing here has to know it: no import goes back from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    import redis
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from wharf_common.settings import CommonSettings

KEY = "wharf"


@dataclass
class Extensions:
    settings: CommonSettings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    migrations: tuple[Path, str] | None = None  # Alembic scripts and schema, set by migrations.init_app


def init_app(app: Flask, extensions: Extensions) -> None:
    app.extensions[KEY] = extensions


def of(app: Flask | None = None) -> Extensions:
    """The extensions of ``app`` (default: the current app)."""
    return (app or current_app).extensions[KEY]
