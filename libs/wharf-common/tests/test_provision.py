"""Each service connects as its own role and cannot touch the other's schema."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
import pytest
from psycopg2 import errors


def _connect(settings: dict[str, object]) -> psycopg2.extensions.connection:
    from sqlalchemy.engine import make_url

    url = make_url(str(settings["database_url"]))
    return psycopg2.connect(
        host=url.host, port=url.port, user=url.username, password=settings["database_password"], dbname=url.database
    )


@pytest.mark.parametrize(("role", "other"), [("api", "auth"), ("auth", "api")])
def test_role_cannot_use_the_other_schema(
    connection_settings: Callable[[str], dict[str, object]], role: str, other: str
) -> None:
    owner = _connect(connection_settings(other))
    with owner, owner.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {other}.probe (x int)")
    owner.close()

    connection = _connect(connection_settings(role))
    try:
        for statement in (f"SELECT * FROM {other}.probe", f"INSERT INTO {other}.probe VALUES (1)"):
            with pytest.raises(errors.InsufficientPrivilege), connection.cursor() as cursor:
                cursor.execute(statement)
            connection.rollback()
        with pytest.raises(errors.InsufficientPrivilege), connection.cursor() as cursor:
            cursor.execute("CREATE TABLE public.sneaky (x int)")
        connection.rollback()
        with connection.cursor() as cursor:
            cursor.execute("SHOW search_path")
            assert cursor.fetchone() == (role,)
    finally:
        connection.close()
        owner = _connect(connection_settings(other))
        with owner, owner.cursor() as cursor:
            cursor.execute(f"DROP TABLE {other}.probe")
        owner.close()
