"""Typed access to what the app factory builds: the one place that knows the key in ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    import redis
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from wharf_common.authn import Authenticator
    from wharf_common.settings import CommonSettings

KEY = "wharf"


@dataclass
class Extensions:
    settings: CommonSettings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    authenticator: Authenticator | None = None  # set by authn.init_app
    migrations: tuple[Path, str] | None = None  # Alembic scripts and schema, set by migrations.init_app


def init_app(app: Flask, extensions: Extensions) -> None:
    app.extensions[KEY] = extensions


def of(app: Flask | None = None) -> Extensions:
    """The extensions of ``app`` (default: the current app)."""
    return (app or current_app).extensions[KEY]
