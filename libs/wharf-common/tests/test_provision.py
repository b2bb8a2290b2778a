"""Each service connects as its own role and cannot touch the other's schema."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import errors

from wharf_common.provision import RETIRED_ROLES
from wharf_common.settings import CONFIG_ERROR_EXIT_CODE


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


@pytest.mark.parametrize(("role", "other"), [("api", "auth"), ("auth", "api")])
def test_postgres_grants_no_privilege_on_the_other_schema(
    connection_settings: Callable[[str], dict[str, object]], role: str, other: str
) -> None:
    """Asked of Postgres itself (membership in other roles included): no right on the schema or
    on any table, sequence or function in it, and no role of an earlier release left behind."""
    connection = _connect(connection_settings(role))
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT has_schema_privilege(%(role)s, %(schema)s, 'USAGE'),"
                " has_schema_privilege(%(role)s, %(schema)s, 'CREATE')",
                {"role": role, "schema": other},
            )
            assert cursor.fetchone() == (False, False)
            cursor.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %(schema)s AND ("
                "  has_table_privilege(%(role)s, c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')"
                "  OR (c.relkind = 'S' AND has_sequence_privilege(%(role)s, c.oid, 'USAGE,SELECT,UPDATE')))",
                {"role": role, "schema": other},
            )
            assert cursor.fetchall() == []
            cursor.execute(
                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                " WHERE m.member = %(role)s::regrole",
                {"role": role},
            )
            assert cursor.fetchall() == []  # a member of no other role
            cursor.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(RETIRED_ROLES),))
            assert cursor.fetchone() == (0,)
    finally:
        connection.close()


def test_a_refused_superuser_password_is_one_line_naming_the_fix(
    postgres_address: tuple[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database that holds another superuser password than the file (another clone's volume)
    stops db-init with one `configuration error` line, never a psycopg2 traceback."""
    from wharf_common import provision

    host, port = postgres_address
    for name, content in {"admin": "not-the-servers-password", "auth": "a" * 20, "api": "b" * 20}.items():
        (tmp_path / name).write_text(content)
    monkeypatch.setenv("DATABASE_ADMIN_URL", f"postgresql://postgres@{host}:{port}/wharf")
    monkeypatch.setenv("DATABASE_ADMIN_PASSWORD_FILE", str(tmp_path / "admin"))
    monkeypatch.setenv("DB_SERVICES", "auth,api")
    monkeypatch.setenv("AUTH_DB_PASSWORD_FILE", str(tmp_path / "auth"))
    monkeypatch.setenv("API_DB_PASSWORD_FILE", str(tmp_path / "api"))

    with pytest.raises(SystemExit) as exited:
        provision.main()

    assert exited.value.code == CONFIG_ERROR_EXIT_CODE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("configuration error: DATABASE_ADMIN_PASSWORD: Postgres at ")
    assert str(tmp_path / "admin") in lines[0]
    assert "Fix: restart Postgres" in lines[0]
    assert "not-the-servers-password" not in lines[0]


def _provision_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, address: tuple[str, int], admin: str) -> None:
    """db-init's environment for one throwaway service role (``waitprobe``), through ``address``."""
    host, port = address
    (tmp_path / "admin").write_text(admin)
    (tmp_path / "waitprobe").write_text("w" * 20)
    monkeypatch.setenv("DATABASE_ADMIN_URL", f"postgresql://postgres@{host}:{port}/wharf")
    monkeypatch.setenv("DATABASE_ADMIN_PASSWORD_FILE", str(tmp_path / "admin"))
    monkeypatch.setenv("DB_SERVICES", "waitprobe")
    monkeypatch.setenv("WAITPROBE_DB_PASSWORD_FILE", str(tmp_path / "waitprobe"))


def test_db_init_waits_until_postgres_accepts_connections(
    postgres_address: tuple[str, int],
    postgres_container: Any,
    tcp_proxy: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compose starts db-init together with Postgres (no health gate): it tries again until Postgres
    answers, then provisions."""
    from wharf_common import provision

    proxy = tcp_proxy(postgres_address)
    proxy.cut()  # every connection is closed at once, as by a server still starting
    _provision_env(monkeypatch, tmp_path, ("127.0.0.1", proxy.port), postgres_container.password)
    opened = threading.Timer(1.5, proxy.restore)
    opened.start()
    try:
        provision.main()
    finally:
        opened.cancel()
    assert proxy.accepted >= 2, "it connected at the first try: Postgres was never away"
    connection = psycopg2.connect(
        host=postgres_address[0], port=postgres_address[1], user="waitprobe", password="w" * 20, dbname="wharf"
    )
    connection.close()


def test_db_init_gives_up_on_a_postgres_that_never_answers_with_one_line(
    postgres_address: tuple[str, int],
    postgres_container: Any,
    tcp_proxy: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from wharf_common import provision

    proxy = tcp_proxy(postgres_address)
    proxy.cut()
    _provision_env(monkeypatch, tmp_path, ("127.0.0.1", proxy.port), postgres_container.password)
    monkeypatch.setattr(provision, "POSTGRES_WAIT_SECONDS", 1)

    with pytest.raises(SystemExit) as exited:
        provision.main()

    assert exited.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    where = f"127.0.0.1:{proxy.port}"
    assert lines[0].startswith(f"error: cannot connect to Postgres at {where} as 'postgres' (waited 1 s)")
    assert proxy.accepted >= 2
