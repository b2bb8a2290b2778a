"""SQLAlchemy engine, per-request sessions and autocommit connections for a service that owns one Postgres schema.

Timeouts, all from the driver and the server: ``connect_timeout`` for new connections, the
server's ``statement_timeout`` for statements, and psycopg2's documented wait callback
(:func:`psycopg2.extensions.set_wait_callback`) for a server that stops answering altogether (a
paused container, a host gone without a reset), which enforces no timeout of its own.
"""

from __future__ import annotations

import functools
import logging
import select
import time

import psycopg2
import psycopg2.extensions
from flask import Flask, g
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wharf_common import extensions, metrics
from wharf_common.problems import Problem
from wharf_common.settings import CommonSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 3
# How long past statement_timeout the client waits for an answer before it drops the connection:
# the server normally cancels the statement itself well within this.
CLIENT_GRACE_SECONDS = 2.0


def database_url(settings: CommonSettings) -> URL:
    """The configured URL with the driver pinned and the password taken from its secret file."""
    url = make_url(str(settings.database_url)).set(drivername="postgresql+psycopg2")
    if settings.database_password is not None:
        url = url.set(password=settings.database_password.get_secret_value())
    return url


def wait_with_deadline(connection: psycopg2.extensions.connection, *, seconds: float) -> None:
    """psycopg2 wait callback: like ``psycopg2.extras.wait_select``, but gives up after ``seconds``
    (``CONNECT_TIMEOUT_SECONDS`` while connecting). Raising here makes psycopg2 close the
    connection, which SQLAlchemy then sees as a disconnect."""
    limit = CONNECT_TIMEOUT_SECONDS if connection.status == psycopg2.extensions.STATUS_SETUP else seconds
    deadline = time.monotonic() + limit
    while (state := connection.poll()) != psycopg2.extensions.POLL_OK:
        poller = select.poll()
        poller.register(
            connection.fileno(), select.POLLIN if state == psycopg2.extensions.POLL_READ else select.POLLOUT
        )
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise psycopg2.OperationalError(f"the database did not answer within {limit:g} s")


# Engines created in this process, so a forked worker can drop inherited connections.
_ENGINES: list[Engine] = []


def make_engine(settings: CommonSettings) -> Engine:
    # Process-wide: every psycopg2 connection of this process waits with this deadline.
    deadline = settings.db_statement_timeout_ms / 1000 + CLIENT_GRACE_SECONDS
    psycopg2.extensions.set_wait_callback(functools.partial(wait_with_deadline, seconds=deadline))
    engine = create_engine(
        database_url(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": settings.service_name,
            # UTC timestamps whatever the server's default, so representations (and ETags) are stable.
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms} -c timezone=UTC",
        },
    )
    _count_pool_use(engine)
    event.listen(engine, "checkin", _end_autocommit)
    _ENGINES.append(engine)
    return engine


def _end_autocommit(dbapi_connection: psycopg2.extensions.connection | None, _record: object) -> None:
    """Back in the pool, every connection is transactional again (an autocommit connection left it so)."""
    if dbapi_connection is not None and not dbapi_connection.closed and dbapi_connection.autocommit:
        dbapi_connection.autocommit = False


def _count_pool_use(engine: Engine) -> None:
    event.listen(engine, "connect", lambda *_: metrics.DB_CONNECTIONS_OPEN.inc())
    event.listen(engine, "close", lambda *_: metrics.DB_CONNECTIONS_OPEN.dec())
    event.listen(engine, "checkout", lambda *_: metrics.DB_CONNECTIONS_IN_USE.inc())
    event.listen(engine, "checkin", lambda *_: metrics.DB_CONNECTIONS_IN_USE.dec())


def dispose_engines_after_fork() -> None:
    for engine in _ENGINES:
        engine.dispose(close=False)


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def init_app(app: Flask) -> None:
    """A session (:func:`get_session`) and an autocommit connection (:func:`autocommit_connection`) per request
    in ``flask.g``, closed (and rolled back if left open) at teardown."""

    @app.teardown_appcontext
    def _close_sessions(_exc: BaseException | None) -> None:
        for name in ("db_session", "db_autocommit_connection"):
            used: Session | Connection | None = g.pop(name, None)
            if used is not None:
                _close(used)


def _close(used: Session | Connection) -> None:
    try:
        used.close()
    except DBAPIError as error:
        # The answer is already made; what failed is the rollback of a transaction with nothing
        # left to keep (Postgres went away after the request's last query). Letting it escape
        # would turn that answer into the server's bare 500, so the connection is dropped instead.
        log.warning("closing the request's database session failed: %s", type(error.orig).__name__)
        used.invalidate()


def get_session() -> Session:
    """The request's session: its statements form one transaction, until it commits or rolls back."""
    session: Session | None = g.get("db_session")
    if session is None:
        session = extensions.of().sessions()
        g.db_session = session
    return session


def autocommit_connection() -> Connection:
    """The request's connection for statements that each stand alone, in SQLAlchemy Core: reads,
    and a write that is one statement (it commits as it runs). Never for statements that must
    commit or see one snapshot together: those take :func:`get_session`."""
    connection: Connection | None = g.get("db_autocommit_connection")
    if connection is None:
        connection = extensions.of().engine.connect()
        # psycopg2's own autocommit: no BEGIN/ROLLBACK round trips around each statement.
        connection.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        g.db_autocommit_connection = connection
    return connection


def ping(engine: Engine) -> None:
    """Raise if Postgres cannot answer a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def insert_unique(row: object, conflict_detail: str) -> None:
    """Insert ``row`` and commit; a unique-constraint violation becomes a 409 problem."""
    session = get_session()
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Problem(409, conflict_detail, slug="conflict") from None
    session.refresh(row)
