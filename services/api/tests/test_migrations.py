from __future__ import annotations

from flask import Flask
from sqlalchemy import inspect, text

from wharf_api.models import Base
from wharf_common.db import get_session


def _tables(app: Flask) -> set[str]:
    with app.app_context():
        return set(inspect(get_session().connection()).get_table_names(schema="api"))


def test_downgrade_to_base_and_upgrade_again(migrated_app: Flask) -> None:
    runner = migrated_app.test_cli_runner()
    try:
        assert runner.invoke(args=["db", "downgrade", "base"]).exit_code == 0
        assert _tables(migrated_app) == {"alembic_version"}
    finally:
        assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert _tables(migrated_app) == {table.name for table in Base.metadata.sorted_tables} | {"alembic_version"}


def _version(app: Flask) -> str:
    with app.app_context():
        session = get_session()
        version = session.execute(text("SELECT version_num FROM api.alembic_version")).scalar_one()
        session.rollback()
        return str(version)


def _set_version(app: Flask, version: str) -> None:
    with app.app_context():
        session = get_session()
        session.execute(text("UPDATE api.alembic_version SET version_num = :v"), {"v": version})
        session.commit()


def test_upgrade_leaves_a_schema_a_later_release_migrated(migrated_app: Flask) -> None:
    """After `make rollback` the previous release's migration step meets a revision it does not
    know (expand-then-contract: it runs on that schema): it says so and changes nothing."""
    head = _version(migrated_app)
    _set_version(migrated_app, "9999_later_release")
    try:
        result = migrated_app.test_cli_runner().invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "newer than this release's" in result.output
        assert _version(migrated_app) == "9999_later_release"
    finally:
        _set_version(migrated_app, head)
    result = migrated_app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "newer than" not in result.output
