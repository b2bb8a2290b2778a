"""Operator commands: ``flask --app wharf_api cache-clear``."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import with_appcontext


@click.command("cache-clear")
@with_appcontext
def cache_clear() -> None:
    """Drop every cached user and page (run after restoring a backup)."""
    removed = current_app.extensions["wharf.api.cache"].clear()
    click.echo(f"cache cleared: {removed} entries removed")


def init_app(app: Flask) -> None:
    app.cli.add_command(cache_clear)
