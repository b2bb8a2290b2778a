"""SQLAlchemy engine, per-request sessions and autocommit connections for a service that owns one Postgres schema."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2.extensions
from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wharf_common import metrics
from wharf_common.problems import Problem
from wharf_common.settings import CommonSettings

log = logging.getLogger(__name__)


def database_url(settings: CommonSettings) -> URL:
    """The configured URL with the driver pinned and the password taken from its secret file."""
    url = make_url(str(settings.database_url)).set(drivername="postgresql+psycopg2")
    if settings.database_password is not None:
        url = url.set(password=settings.database_password.get_secret_value())
    return url


# Engines created in this process, so a forked worker can drop inherited connections.
_ENGINES: list[Engine] = []

# How long past statement_timeout a call may stay unanswered before the client gives up on it:
# the server normally cancels the statement itself well within this.
CLIENT_GRACE_SECONDS = 2.0


class Watchdog:
    """Shuts down the socket of a database call that is still unanswered after its deadline.

    ``statement_timeout`` is enforced by the server; a server that no longer answers at all (a
    frozen process, a paused container, a host gone without a reset) enforces nothing, and libpq
    would wait until TCP gives up, many minutes later. Shutting the socket down makes the blocked
    call fail at once as a lost connection, which SQLAlchemy invalidates and the services answer
    with 503. One thread per process, started by the first guarded call (so after a fork too).
    """

    def __init__(self, interval: float = 0.1) -> None:
        self._interval = interval
        self._calls: dict[int, tuple[float, int]] = {}  # call number -> (deadline, socket fd)
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._pid: int | None = None

    @contextlib.contextmanager
    def guard(self, fd: int, seconds: float) -> Iterator[None]:
        if self._pid != os.getpid():
            self._start()
        number = next(self._numbers)
        with self._lock:
            self._calls[number] = (time.monotonic() + seconds, fd)
        try:
            yield
        finally:
            with self._lock:
                self._calls.pop(number, None)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        threading.Thread(target=self._watch, name="db-watchdog", daemon=True).start()

    def after_fork_in_child(self) -> None:
        """A forked child has no watchdog thread yet, and a lock its parent's thread may have held."""
        self._lock = threading.Lock()
        self._calls = {}
        self._pid = None

    def _watch(self) -> None:
        while True:
            time.sleep(self._interval)
            now = time.monotonic()
            # Under the lock: a guarded call cannot end (and its socket be closed and the fd
            # reused) while its socket is being shut down.
            with self._lock:
                for number, (deadline, fd) in list(self._calls.items()):
                    if deadline <= now:
                        del self._calls[number]
                        _shut_down(fd)


def _shut_down(fd: int) -> None:
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG.after_fork_in_child)


class _GuardedCursor(psycopg2.extensions.cursor):
    def execute(self, query: Any, vars: Any = None) -> None:
        with _guard(self.connection):
            super().execute(query, vars)

    def executemany(self, query: Any, vars_list: Any) -> None:
        with _guard(self.connection):
            super().executemany(query, vars_list)


class _GuardedConnection(psycopg2.extensions.connection):
    """A psycopg2 connection whose every round trip is bounded by :data:`WATCHDOG`."""

    deadline_seconds: float = 0.0

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) < 2 and kwargs.get("cursor_factory") is None:
            kwargs["cursor_factory"] = _GuardedCursor
        return super().cursor(*args, **kwargs)

    def commit(self) -> None:
        with _guard(self):
            super().commit()

    def rollback(self) -> None:
        with _guard(self):
            super().rollback()


def _guard(connection: Any) -> contextlib.AbstractContextManager[None]:
    if connection.closed or not isinstance(connection, _GuardedConnection):
        return contextlib.nullcontext()  # psycopg2 itself reports the closed connection
    return WATCHDOG.guard(connection.fileno(), connection.deadline_seconds)


def guarded_connection_class(deadline_seconds: float) -> type[psycopg2.extensions.connection]:
    return type("GuardedConnection", (_GuardedConnection,), {"deadline_seconds": deadline_seconds})


def make_engine(settings: CommonSettings) -> Engine:
    engine = create_engine(
        database_url(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": settings.service_name,
            # Bound every statement so a stuck query cannot hold a worker forever.
            # UTC timestamps whatever the server's default, so representations (and ETags) are stable.
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms} -c timezone=UTC",
            # ...and a server that stops answering altogether cannot hold one either.
            "connection_factory": guarded_connection_class(
                settings.db_statement_timeout_ms / 1000 + CLIENT_GRACE_SECONDS
            ),
        },
    )
    _count_pool_use(engine)
    event.listen(engine, "checkin", _end_autocommit)
    _ENGINES.append(engine)
    return engine


def _end_autocommit(dbapi_connection: Any, _record: Any) -> None:
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


def init_app(app: Flask, engine: Engine) -> None:
    """A session (:func:`get_session`) and an autocommit connection (:func:`autocommit_connection`) per request
    in ``flask.g``, closed (and rolled back if left open) at teardown."""
    app.extensions["wharf.db.engine"] = engine
    app.extensions["wharf.db.sessionmaker"] = sessionmaker(engine, expire_on_commit=False)

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
        session = current_app.extensions["wharf.db.sessionmaker"]()
        g.db_session = session
    return session


def autocommit_connection() -> Connection:
    """The request's connection for statements that each stand alone, in SQLAlchemy Core: reads,
    and a write that is one statement (it commits as it runs).

    Driver autocommit: no BEGIN and ROLLBACK (or COMMIT) round trips around the statement, two of
    the four of an uncached single-row read. Set on the driver, not with
    ``isolation_level="AUTOCOMMIT"``, which for psycopg2 sends ``SET default_transaction_isolation``
    at checkout and at checkin. Core rows, not ORM objects: no unit of work, identity map or
    instance state, ~400 -> ~200 us of CPU for a single-row read in one worker. Never for
    statements that must commit or see one snapshot together: those take :func:`get_session`."""
    connection: Connection | None = g.get("db_autocommit_connection")
    if connection is None:
        connection = current_app.extensions["wharf.db.engine"].connect()
        # No statement has run yet: psycopg2 would send its BEGIN with the first one.
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
