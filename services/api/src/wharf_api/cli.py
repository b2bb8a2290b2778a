"""Operator commands: ``flask --app wharf_api cache-clear``."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext

from wharf_api import extensions


@click.command("cache-clear")
@with_appcontext
def cache_clear() -> None:
    """Retire every cached document (run after restoring a backup)."""
    extensions.of().cache.clear()
    click.echo("cache cleared")


def init_app(app: Flask) -> None:
    app.cli.add_command(cache_clear)
