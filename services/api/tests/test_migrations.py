from __future__ import annotations

from flask import Flask
from sqlalchemy import inspect

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
