"""Create each service's database role and schema, idempotently, as the Postgres superuser.

Each service gets a login role named after it that owns a schema of the same name and has no
right on any other schema, so ``api`` cannot read ``auth``'s tables: services learn from each
other through their APIs only. Passwords are (re)applied on every run, so rotating a password
secret and re-running this is enough.

Environment: ``DATABASE_ADMIN_URL`` (+ ``DATABASE_ADMIN_PASSWORD_FILE``), ``DB_SERVICES``
(comma-separated, e.g. ``auth,api``), and ``<SERVICE>_DB_PASSWORD_FILE`` for each service.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import NoReturn

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url

from wharf_common.settings import CONFIG_ERROR_EXIT_CODE, read_secret

log = logging.getLogger("wharf.provision")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
# A role of earlier releases that let every service read auth.revocations: dropped on upgrade.
RETIRED_ROLES = ("wharf_revocation_readers",)
# How long to wait for Postgres to accept connections (a first start initialises its data directory
# first), trying again every RETRY_PAUSE_SECONDS.
POSTGRES_WAIT_SECONDS = 120
RETRY_PAUSE_SECONDS = 0.5


def _require(name: str, value: str | None) -> str:
    if not value:
        print(f"configuration error: {name} (or {name}_FILE) is required", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT_CODE)
    return value


def provision_service(cursor: psycopg2.extensions.cursor, database: str, service: str, password: str) -> None:
    role = sql.Identifier(service)
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (service,))
    if cursor.fetchone() is None:
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    cursor.execute(
        sql.SQL("ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD %s").format(role),
        (password,),
    )
    cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(role, role))
    cursor.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(role, role))
    cursor.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(role))
    cursor.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(role, role))
    cursor.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(database), role))


def drop_retired_roles(cursor: psycopg2.extensions.cursor) -> None:
    for name in RETIRED_ROLES:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        if cursor.fetchone() is not None:
            role = sql.Identifier(name)
            cursor.execute(sql.SQL("DROP OWNED BY {}").format(role))  # its grants, in this database
            cursor.execute(sql.SQL("DROP ROLE {}").format(role))


def _connect_as_admin(admin_url: URL, password: str, database: str) -> psycopg2.extensions.connection:
    """The superuser's connection, once Postgres accepts connections (it may still be starting: compose
    starts this one-shot with Postgres, not after a health check; at most ``POSTGRES_WAIT_SECONDS``).
    A refused password or a server that never answers stops the one-shot with one line naming the
    cause and the fix (``make up`` prints it), never a traceback."""
    where = f"{admin_url.host}:{admin_url.port or 5432}"
    deadline = time.monotonic() + POSTGRES_WAIT_SECONDS
    while True:
        try:
            return psycopg2.connect(
                host=admin_url.host,
                port=admin_url.port or 5432,
                user=admin_url.username,
                password=password,
                dbname=database,
                connect_timeout=10,
                application_name="wharf-provision",
            )
        except psycopg2.OperationalError as exc:
            reason = " ".join(str(exc).split())
            if "password authentication failed" in reason:
                _refused_password(admin_url, where)
            if time.monotonic() >= deadline:
                print(
                    f"error: cannot connect to Postgres at {where} as {admin_url.username!r} "
                    f"(waited {POSTGRES_WAIT_SECONDS} s): {reason}",
                    file=sys.stderr,
                )
                raise SystemExit(1) from None
            # Not listening yet (or a name not resolving yet), or the server is starting up.
            time.sleep(RETRY_PAUSE_SECONDS)


def _refused_password(admin_url: URL, where: str) -> NoReturn:
    # The compose stack's postgres sets it from the same file whenever it starts
    # (deploy/postgres/entrypoint.sh), so a running one started before the file changed.
    print(
        f"configuration error: DATABASE_ADMIN_PASSWORD: Postgres at {where} refused the password of "
        f"{admin_url.username!r} from {os.environ.get('DATABASE_ADMIN_PASSWORD_FILE')}. Fix: restart Postgres "
        "so it takes the file's password (compose: scripts/compose.sh up -d --force-recreate postgres, data "
        "kept), or, for a server of your own, put its password in that file",
        file=sys.stderr,
    )
    raise SystemExit(CONFIG_ERROR_EXIT_CODE)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    admin_url = make_url(_require("DATABASE_ADMIN_URL", os.environ.get("DATABASE_ADMIN_URL")))
    admin_password = _require("DATABASE_ADMIN_PASSWORD", read_secret("DATABASE_ADMIN_PASSWORD"))
    services = [s.strip() for s in _require("DB_SERVICES", os.environ.get("DB_SERVICES")).split(",") if s.strip()]
    for service in services:
        if not _NAME.match(service):
            print(f"configuration error: DB_SERVICES: invalid service name {service!r}", file=sys.stderr)
            raise SystemExit(CONFIG_ERROR_EXIT_CODE)
    passwords = {s: _require(f"{s.upper()}_DB_PASSWORD", read_secret(f"{s.upper()}_DB_PASSWORD")) for s in services}
    database = admin_url.database or "postgres"

    connection = _connect_as_admin(admin_url, admin_password, database)
    try:
        with connection, connection.cursor() as cursor:
            # Nobody but the owner and the granted roles may connect or create in public.
            cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
            cursor.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            drop_retired_roles(cursor)
            for service in services:
                provision_service(cursor, database, service, passwords[service])
                log.info("provisioned role and schema %r", service)
    finally:
        connection.close()


if __name__ == "__main__":
    main()
