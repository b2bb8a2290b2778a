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


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the service's schema to REVISION (default: head)."""
    command.upgrade(_config(), revision)


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
