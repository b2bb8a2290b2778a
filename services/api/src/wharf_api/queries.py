"""Every SQL statement of the api, as keyword-only functions over the resources' tables.

Reads and one-statement writes run on the request's autocommit connection; what must commit
together (a locked row and its change, a create and its Idempotency-Key record) runs in the
request's session.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, Table, bindparam, delete, func, select, tuple_, update
from sqlalchemy import insert as insert_into
from sqlalchemy.orm import Session

from wharf_api.models import IdempotencyKey
from wharf_common.db import autocommit_connection


@functools.cache
def _by_id(table: Table, owned: bool) -> Select[Any]:
    query = select(table).where(table.c.id == bindparam("key"))
    return query.where(table.c.owner == bindparam("owner")) if owned else query


def by_id(*, table: Table, key: uuid.UUID, owner: str | None = None) -> Row[Any] | None:
    """The row with this id (only if ``owner``'s, when given)."""
    statement = _by_id(table, owner is not None)
    return autocommit_connection().execute(statement, {"key": key, "owner": owner}).one_or_none()


def page(*, table: Table, limit: int, after: uuid.UUID | None, owner: str | None = None) -> Sequence[Row[Any]]:
    """Up to ``limit + 1`` rows in id order after ``after`` (keyset pagination: as cheap deep as
    first), only ``owner``'s when given; the extra row says whether another page follows."""
    query = select(table).order_by(table.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(table.c.id > after)
    if owner is not None:
        query = query.where(table.c.owner == owner)
    return autocommit_connection().execute(query).all()


@functools.cache
def _insert(table: Table) -> Any:
    return insert_into(table).returning(*table.c)  # the server's defaults (timestamps) come back with it


def insert(*, table: Table, values: dict[str, Any], session: Session | None = None) -> Row[Any]:
    """The new row; in ``session``'s transaction when given, else committed at once."""
    runner = session if session is not None else autocommit_connection()
    return runner.execute(_insert(table), values).one()


def lock_by_id(session: Session, *, table: Table, key: uuid.UUID) -> Row[Any] | None:
    """The row, locked (``FOR UPDATE``) until the session's transaction ends; None if there is none."""
    return session.execute(select(table).where(table.c.id == key).with_for_update()).one_or_none()


def update_by_id(session: Session, *, table: Table, key: uuid.UUID, values: dict[str, Any]) -> Row[Any]:
    """The row with ``values`` and a new ``updated_at`` (the time of this statement), in the session."""
    statement = update(table).where(table.c.id == key).values({**values, "updated_at": func.statement_timestamp()})
    return session.execute(statement.returning(*table.c)).one()


def delete_by_id(session: Session, *, table: Table, key: uuid.UUID) -> None:
    session.execute(delete(table).where(table.c.id == key))


def try_transaction_lock(session: Session, *, lock_id: int) -> bool:
    """A Postgres advisory lock held until the session's transaction ends; False if another holds it."""
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(lock_id))))


def idempotency_record(session: Session, *, owner: str, key: str) -> IdempotencyKey | None:
    return session.get(IdempotencyKey, (owner, key))


def delete_idempotency_records(session: Session, *, older_than: datetime, batch: int = 100) -> None:
    expired = select(IdempotencyKey.owner, IdempotencyKey.key).where(IdempotencyKey.created_at < older_than)
    session.execute(
        delete(IdempotencyKey).where(tuple_(IdempotencyKey.owner, IdempotencyKey.key).in_(expired.limit(batch)))
    )
