"""SQLAlchemy engine and per-request sessions for a service that owns one Postgres schema."""

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
from flask import Flask, g
from sqlalchemy import Engine, create_engine, event, text
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


def _autocommit(_session: Session, _transaction: Any, connection: Any) -> None:
    """Run a read session's statements on their own. Set on the driver, not with SQLAlchemy's
    ``isolation_level="AUTOCOMMIT"``: for psycopg2 that sends ``SET default_transaction_isolation``
    at checkout and again at checkin, two round trips for the two it saves. (No statement has run
    yet: psycopg2 sends its BEGIN with the first one.)"""
    connection.connection.dbapi_connection.autocommit = True


def _end_autocommit(dbapi_connection: Any, _record: Any) -> None:
    """Back in the pool, every connection is transactional again (a read session left it in autocommit)."""
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
    """Sessions per request in ``flask.g`` (:func:`get_session`, :func:`read_session`), closed (and
    rolled back if left open) at teardown."""
    app.extensions["wharf.db.engine"] = engine
    app.extensions["wharf.db.sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
    reads = sessionmaker(engine, expire_on_commit=False)
    event.listen(reads, "after_begin", _autocommit)
    app.extensions["wharf.db.read_sessionmaker"] = reads

    @app.teardown_appcontext
    def _close_sessions(_exc: BaseException | None) -> None:
        for name in ("db_session", "db_read_session"):
            session: Session | None = g.pop(name, None)
            if session is not None:
                _close(session)


def _close(session: Session) -> None:
    try:
        session.close()
    except DBAPIError as error:
        # The answer is already made; what failed is the rollback of a transaction with nothing
        # left to keep (Postgres went away after the request's last query). Letting it escape
        # would turn that answer into the server's bare 500, so the connection is dropped instead.
        log.warning("closing the request's database session failed: %s", type(error.orig).__name__)
        session.invalidate()


def get_session() -> Session:
    """The request's session: its statements form one transaction, until it commits or rolls back."""
    return _session("db_session", "wharf.db.sessionmaker")


def read_session() -> Session:
    """A session for a request that only reads, one statement at a time: each runs on its own
    (autocommit), without the BEGIN and ROLLBACK round trips a transaction adds, which were two
    of the four round trips of an uncached single-row read. Never for writes, nor for reads that
    must see one snapshot together."""
    return _session("db_read_session", "wharf.db.read_sessionmaker")


def _session(name: str, factory: str) -> Session:
    session: Session | None = g.get(name)
    if session is None:
        from flask import current_app

        session = current_app.extensions[factory]()
        setattr(g, name, session)
    return session


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
