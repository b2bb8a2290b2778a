"""SQLAlchemy engine and per-request sessions for a service that owns one Postgres schema."""

from __future__ import annotations

from flask import Flask, g
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wharf_common import metrics
from wharf_common.problems import Problem
from wharf_common.settings import CommonSettings


def database_url(settings: CommonSettings) -> URL:
    """The configured URL with the driver pinned and the password taken from its secret file."""
    url = make_url(str(settings.database_url)).set(drivername="postgresql+psycopg2")
    if settings.database_password is not None:
        url = url.set(password=settings.database_password.get_secret_value())
    return url


# Engines created in this process, so a forked worker can drop inherited connections.
_ENGINES: list[Engine] = []


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
        },
    )
    _count_pool_use(engine)
    _ENGINES.append(engine)
    return engine


def _count_pool_use(engine: Engine) -> None:
    event.listen(engine, "connect", lambda *_: metrics.DB_CONNECTIONS_OPEN.inc())
    event.listen(engine, "close", lambda *_: metrics.DB_CONNECTIONS_OPEN.dec())
    event.listen(engine, "checkout", lambda *_: metrics.DB_CONNECTIONS_IN_USE.inc())
    event.listen(engine, "checkin", lambda *_: metrics.DB_CONNECTIONS_IN_USE.dec())


def dispose_engines_after_fork() -> None:
    for engine in _ENGINES:
        engine.dispose(close=False)


def init_app(app: Flask, engine: Engine) -> None:
    """One session per request in ``flask.g``, closed (and rolled back if left open) at teardown."""
    factory = sessionmaker(engine, expire_on_commit=False)
    app.extensions["wharf.db.engine"] = engine
    app.extensions["wharf.db.sessionmaker"] = factory

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            session.close()


def get_session() -> Session:
    session = g.get("db_session")
    if session is None:
        from flask import current_app

        session = current_app.extensions["wharf.db.sessionmaker"]()
        g.db_session = session
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
