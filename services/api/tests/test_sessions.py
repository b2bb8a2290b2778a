"""The request's session and autocommit connection (wharf_common.db) against the real Postgres."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2.extensions
from flask import Flask
from sqlalchemy import text

from wharf_common import extensions as common
from wharf_common.db import autocommit_connection, get_session

IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
IN_TRANSACTION = psycopg2.extensions.TRANSACTION_STATUS_INTRANS


def _driver(connection: object) -> psycopg2.extensions.connection:
    """The psycopg2 connection under a SQLAlchemy Connection (a session's: ``session.connection()``)."""
    return connection.connection.dbapi_connection  # type: ignore[attr-defined]


def _two_clock_readings(session: object) -> tuple[object, object]:
    first = session.execute(text("SELECT now()")).scalar()  # type: ignore[attr-defined]
    session.execute(text("SELECT pg_sleep(0.01)"))  # type: ignore[attr-defined]
    return first, session.execute(text("SELECT now()")).scalar()  # type: ignore[attr-defined]


def test_the_autocommit_connection_runs_each_statement_on_its_own(app: Flask) -> None:
    with app.test_request_context():
        reads = autocommit_connection()
        first, second = _two_clock_readings(reads)
        assert first != second  # now() is the transaction's start: each statement had its own
        assert _driver(reads).info.transaction_status == IDLE  # no BEGIN was sent
        assert autocommit_connection() is reads  # one per request


def test_the_request_session_is_one_transaction(app: Flask) -> None:
    with app.test_request_context():
        session = get_session()
        first, second = _two_clock_readings(session)
        assert first == second
        assert _driver(session.connection()).info.transaction_status == IN_TRANSACTION


def test_a_connection_used_for_reads_is_back_in_the_pool_and_transactional_again(
    make_api: Callable[..., Flask],
) -> None:
    single = make_api(db_pool_size=1, db_max_overflow=0)
    with single.test_request_context():
        reads = autocommit_connection()
        reads.execute(text("SELECT 1"))
        used = _driver(reads)
    assert common.of(single).engine.pool.checkedout() == 0
    with single.test_request_context():  # the same (only) connection, now for a transaction
        session = get_session()
        assert _driver(session.connection()) is used
        first, second = _two_clock_readings(session)
        assert first == second
