"""Alembic wiring shared by the services: ``flask --app <svc> db upgrade|downgrade|current``.

Each service keeps its own migration scripts in ``<package>/migrations`` and its version table in
its own schema; the service's ``env.py`` only calls :func:`run_migrations`.
"""

from __future__ import annotations

from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import Engine, MetaData

from wharf_common import extensions

db_cli = AppGroup("db", help="Database migrations (Alembic).")


def alembic_config(engine: Engine, script_location: Path, schema: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["engine"] = engine
    config.attributes["schema"] = schema
    return config


def run_migrations(context: EnvironmentContext, metadata: MetaData) -> None:
    """Body of every service's ``env.py``: online migrations in one transaction, on the app's engine."""
    engine: Engine = context.config.attributes["engine"]
    schema: str = context.config.attributes["schema"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=False,
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            # Serialise concurrent migrators (two replicas started at once) on this schema.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%(s)s))", {"s": f"migrate:{schema}"})
            context.run_migrations()
        connection.commit()


def _config() -> Config:
    found = extensions.of()
    assert found.migrations is not None, "migrations.init_app was not called"
    script_location, schema = found.migrations
    return alembic_config(found.engine, script_location, schema)


def newer_than_this_release(config: Config) -> str | None:
    """The schema's revision when this release's scripts do not know it (a later release migrated
    it, and this one was rolled back to), else None."""
    engine: Engine = config.attributes["engine"]
    with engine.connect() as connection:
        options = {"version_table_schema": config.attributes["schema"]}
        current = MigrationContext.configure(connection, opts=options).get_current_revision()
    if current is None:
        return None
    try:
        ScriptDirectory.from_config(config).get_revision(current)
    except CommandError:  # alembic's answer for a revision its scripts do not have
        return current
    return None


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the service's schema to REVISION (default: head)."""
    config = _config()
    # Migrations are expand-then-contract (README), so a release runs on the schema of the next
    # one: after `make rollback` its migration step leaves that schema as it is instead of failing.
    newer = newer_than_this_release(config)
    if newer is not None:
        head = ScriptDirectory.from_config(config).get_current_head()
        schema = config.attributes["schema"]
        click.echo(f"schema {schema!r} is at revision {newer}, newer than this release's {head}: left as it is")
        return
    command.upgrade(config, revision)


@db_cli.command("downgrade")
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade the service's schema to REVISION (e.g. base)."""
    command.downgrade(_config(), revision)


@db_cli.command("current")
def current() -> None:
    """Show the current revision."""
    command.current(_config())


def init_app(app: Flask, script_location: Path, schema: str) -> None:
    extensions.of(app).migrations = (script_location, schema)
    app.cli.add_command(db_cli)
