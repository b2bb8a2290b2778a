"""Every SQL statement of the api, as keyword-only functions over the resources' tables.

Reads run on the request's autocommit connection (:func:`wharf_common.db.autocommit_read`); every
write runs in the request's session, and its caller commits (wharf_common.db says why a write is
never sent on the autocommit connection). Statements are built once per shape
(``functools.cache``), so a request only binds its values.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import insert as insert_into
from sqlalchemy.orm import Session

from wharf_api.models import IdempotencyKey
from wharf_common.db import autocommit_read


@functools.cache
def _by_id(table: Table, owned: bool) -> Select[Any]:
    query = select(table).where(table.c.id == bindparam("key"))
    return query.where(table.c.owner == bindparam("owner")) if owned else query


def by_id(
    *, table: Table, key: uuid.UUID, owner: str | None = None, session: Session | Connection | None = None
) -> Row[Any] | None:
    """The row with this id (only if ``owner``'s, when given), in ``session``'s transaction when given."""
    statement, values = _by_id(table, owner is not None), {"key": key, "owner": owner}
    if session is not None:
        return session.execute(statement, values).one_or_none()
    return autocommit_read(lambda connection: connection.execute(statement, values).one_or_none())


def page(*, table: Table, limit: int, after: uuid.UUID | None, owner: str | None = None) -> Sequence[Row[Any]]:
    """Up to ``limit + 1`` rows in id order after ``after`` (keyset pagination: as cheap deep as
    first), only ``owner``'s when given; the extra row says whether another page follows."""
    query = select(table).order_by(table.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(table.c.id > after)
    if owner is not None:
        query = query.where(table.c.owner == owner)
    return autocommit_read(lambda connection: connection.execute(query).all())


@functools.cache
def _insert(table: Table) -> Any:
    return insert_into(table).returning(*table.c)  # the server's defaults (timestamps) come back with it


def insert(session: Session | Connection, *, table: Table, values: dict[str, Any]) -> Row[Any]:
    """The new row, in the transaction of ``session`` (an ORM session or a Core connection)."""
    return session.execute(_insert(table), values).one()


@functools.cache
def _lock_by_id(table: Table) -> Select[Any]:
    return select(table).where(table.c.id == bindparam("key")).with_for_update()


def lock_by_id(session: Session, *, table: Table, key: uuid.UUID) -> Row[Any] | None:
    """The row, locked (``FOR UPDATE``) until the session's transaction ends; None if there is none."""
    return session.execute(_lock_by_id(table), {"key": key}).one_or_none()


@functools.cache
def _update(table: Table, columns: frozenset[str], owned: bool, if_changed: bool) -> Update:
    """``UPDATE`` of ``columns`` (bound as ``new_<column>``) and ``updated_at`` of the row ``key``:
    only if ``writer`` owns it (``owned``), only if one of the values differs (``if_changed``)."""
    conditions = [table.c.id == bindparam("key")]
    if owned:
        conditions.append(table.c.owner == bindparam("writer"))
    if if_changed:
        conditions.append(or_(*(table.c[name].is_distinct_from(bindparam(f"new_{name}")) for name in sorted(columns))))
    values = {name: bindparam(f"new_{name}") for name in columns} | {"updated_at": func.statement_timestamp()}
    return update(table).where(and_(*conditions)).values(values).returning(*table.c)


def _bound(values: dict[str, Any], **others: Any) -> dict[str, Any]:
    return {f"new_{name}": value for name, value in values.items()} | others


def update_by_id(session: Session, *, table: Table, key: uuid.UUID, values: dict[str, Any]) -> Row[Any]:
    """The row with ``values`` and a new ``updated_at`` (the time of this statement), in the session."""
    statement = _update(table, frozenset(values), owned=False, if_changed=False)
    return session.execute(statement, _bound(values, key=key)).one()


def update_if_changed(
    session: Session | Connection, *, table: Table, key: uuid.UUID, values: dict[str, Any], owner: str | None
) -> Row[Any] | None:
    """The row after ``values`` and a new ``updated_at`` were set, in the session, if it exists (and
    is ``owner``'s, when given) and one of ``values`` differs from the row's; else None (the caller
    reads the row to tell which). One statement: the row is locked only while it changes."""
    statement = _update(table, frozenset(values), owned=owner is not None, if_changed=True)
    return session.execute(statement, _bound(values, key=key, writer=owner)).one_or_none()


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
