"""SQLAlchemy engine, per-request sessions and autocommit connections for a service that owns one Postgres schema.

Timeouts, all from the driver and the server: ``connect_timeout`` for new connections, the
server's ``statement_timeout`` for statements, and psycopg2's documented wait callback
(:func:`psycopg2.extensions.set_wait_callback`) for a server that stops answering altogether (a
paused container, a host gone without a reset), which enforces no timeout of its own.

Dead connections are handled the optimistic way SQLAlchemy documents ("Dealing with Disconnects",
and its FAQ "How do I retry a statement execution automatically?"): no ping at checkout (a round
trip to Postgres for every request), connections recycled after ``POOL_RECYCLE_SECONDS``, TCP
keepalives so that a peer gone silent is noticed while a connection idles, and a unit of work run
once more when its first statement finds its pooled connection dead (Postgres restarted, or the
connection was ended while it idled). SQLAlchemy then invalidates the whole pool, so the second try
runs on a new connection. Which units are retried, and why that is safe:

- a request's transaction (its session): when its first statement finds the connection dead,
  nothing of the transaction reached Postgres, and the view runs again from the start
  (:class:`RetryingDispatch`). A later failure, the COMMIT's included, is not retried: the
  COMMIT's fate is then unknown;
- the autocommit connection is for reads (:func:`autocommit_read` sends one again on a new
  connection). A write there would commit as it runs: one sent on a connection found dead or hung
  cannot tell whether it reached Postgres, and a hung server that resumes still runs it, after the
  request was answered 503. So every write is a transaction (BEGIN, the statements, then a COMMIT
  sent only once they have answered), even a write of one statement.
"""

from __future__ import annotations

import functools
import logging
import select
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg2
import psycopg2.extensions
from flask import Flask, g, has_app_context
from flask.typing import ResponseReturnValue
from sqlalchemy import Connection, Engine, ExceptionContext, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wharf_common import extensions, metrics
from wharf_common.problems import Problem
from wharf_common.settings import CommonSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 3
POOL_RECYCLE_SECONDS = 1800  # older connections are replaced at checkout (firewalls and proxies drop idle ones)
# libpq's TCP keepalives: a connection whose peer went away without a word (a host gone, a dropped
# NAT entry) is found dead while it idles in the pool, after about a minute, not when a request uses it.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
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


# What a request may hold in flask.g: closed (rolled back if left open) at teardown.
REQUEST_CONNECTIONS = ("db_session", "db_write_connection", "db_autocommit_connection")

# Engines created in this process, so a forked worker can drop inherited connections.
_ENGINES: list[Engine] = []


def make_engine(settings: CommonSettings, *, ping_at_checkout: bool = False) -> Engine:
    """The engine of a service's web app (dead connections handled as this module says) or, with
    ``ping_at_checkout``, of a process whose units of work are not retried here (the mail worker):
    SQLAlchemy's pessimistic ping, a round trip before each checkout."""
    # Process-wide: every psycopg2 connection of this process waits with this deadline.
    deadline = settings.db_statement_timeout_ms / 1000 + CLIENT_GRACE_SECONDS
    psycopg2.extensions.set_wait_callback(functools.partial(wait_with_deadline, seconds=deadline))
    engine = create_engine(
        database_url(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_pre_ping=ping_at_checkout,
        pool_recycle=POOL_RECYCLE_SECONDS,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": settings.service_name,
            # UTC timestamps whatever the server's default, so representations (and ETags) are stable.
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms} -c timezone=UTC",
            **KEEPALIVES,
        },
    )
    _count_pool_use(engine)
    event.listen(engine, "checkin", _end_autocommit)
    event.listen(engine, "after_cursor_execute", _answered)
    event.listen(engine, "handle_error", _note_dead_connection)
    _ENGINES.append(engine)
    return engine


def _answered(*_: object) -> None:
    """A statement of the request was answered: its connection was alive."""
    if has_app_context():
        g.db_answered = True


def _note_dead_connection(context: ExceptionContext) -> None:
    """The request's first statement found the (pooled) connection of its session dead: nothing of
    its transaction reached Postgres, so :class:`RetryingDispatch` may run the view again. Failures
    to connect are not noted (nothing was found dead: a second try would only wait again), nor are
    the autocommit connection's (:func:`on_autocommit` decides for those)."""
    if (
        context.is_disconnect
        and context.connection is not None
        and has_app_context()
        and not g.get("db_answered")
        and context.connection is not g.get("db_autocommit_connection")
    ):
        g.db_dead_on_first_statement = True


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
        _close_request_connections()


class RetryingDispatch(Flask):
    """A Flask app whose view runs once more when its first statement found its session's pooled
    connection dead (the unit of work retried by the module docstring's rule). A view therefore does
    nothing outside Postgres that must not happen twice before its first statement (reading Redis,
    verifying a token, hashing a password are fine); what follows a commit is never repeated."""

    def dispatch_request(self) -> ResponseReturnValue:
        try:
            return super().dispatch_request()
        except DBAPIError:
            if not g.pop("db_dead_on_first_statement", False):
                raise
        log.warning("a pooled database connection was dead: the request runs again on a new one")
        _close_request_connections()
        g.db_answered = False
        return super().dispatch_request()


def _close_request_connections() -> None:
    """Close (rolling back what is open) every connection the request holds in flask.g."""
    for name in REQUEST_CONNECTIONS:
        used: Session | Connection | None = g.pop(name, None)
        if used is not None:
            _close(used)


def autocommit_read(run: Callable[[Connection], T]) -> T:
    """``run(connection)``, reads on the request's autocommit connection; if the connection turns
    out dead, ``run`` once more on a new one. Reads only: a write on this connection commits as it
    runs, and one that met a dead or hung connection may have reached Postgres (or be read by it
    later, when a hung server resumes), so sending it again could apply it twice."""
    connection = autocommit_connection()  # a failure to connect is not retried: nothing was found dead
    try:
        return run(connection)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    log.warning("the database connection was dead: the read is sent again on a new one")
    _close(g.pop("db_autocommit_connection"))
    return run(autocommit_connection())


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


def write_connection() -> Connection:
    """The request's connection for a write in SQLAlchemy Core, without the ORM's unit of work: its
    statements form one transaction (begun by the first), which the caller commits
    (``connection.commit()``). Where ORM objects are written, :func:`get_session` instead."""
    connection: Connection | None = g.get("db_write_connection")
    if connection is None:
        connection = extensions.of().engine.connect()
        g.db_write_connection = connection
    return connection


def autocommit_connection() -> Connection:
    """The request's connection for reads that each stand alone, in SQLAlchemy Core (through
    :func:`autocommit_read`). Never for writes, nor for statements that must see one snapshot
    together: those take :func:`get_session`."""
    connection: Connection | None = g.get("db_autocommit_connection")
    if connection is None:
        connection = extensions.of().engine.connect()
        # psycopg2's own autocommit: no BEGIN/ROLLBACK round trips around each statement.
        connection.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        g.db_autocommit_connection = connection
    return connection


def ping(engine: Engine) -> None:
    """Raise if Postgres cannot answer a trivial query (asked twice if the pooled connection was dead)."""
    try:
        _select_one(engine)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        _select_one(engine)


def _select_one(engine: Engine) -> None:
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
