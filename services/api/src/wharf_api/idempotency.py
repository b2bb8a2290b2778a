"""Idempotent creates (``Idempotency-Key``), safe under retries, concurrency and crashes.

The key's record is written in the same transaction as the row it created, so an acknowledged
create always has its record and an unacknowledged one has neither. A transaction-scoped advisory
lock on (caller, key) serialises requests with the same key: a second one arriving while the first
is still running gets 409 at once instead of waiting or creating a duplicate.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from flask import Response, request
from sqlalchemy.orm import Session

from wharf_api import queries
from wharf_api.documents import etag_of
from wharf_api.models import IdempotencyKey
from wharf_common.problems import Problem
from wharf_common.validation import invalid_field

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
TTL = timedelta(hours=24)  # how long a key's answer is replayed


def key_from_request() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise invalid_field(HEADER, f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key


def fingerprint(body: bytes) -> str:
    """The same JSON, however it is spaced or ordered, is the same request."""
    canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{request.method} {request.path}\n{canonical}".encode()).hexdigest()


def _lock_id(owner: str, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"idempotency\0{owner}\0{key}".encode()).digest()[:8], "big", signed=True)


def begin(session: Session, owner: str, key: str, request_hash: str) -> Response | None:
    """Take the key for this transaction; the stored response if it was already used for ``body``."""
    if not queries.try_transaction_lock(session, lock_id=_lock_id(owner, key)):
        raise Problem(409, "A request with this Idempotency-Key is still in progress.", slug="idempotency-key-in-use")
    cutoff = datetime.now(UTC) - TTL
    queries.delete_idempotency_records(session, older_than=cutoff)  # housekeeping, a bounded batch
    stored = queries.idempotency_record(session, owner=owner, key=key)
    if stored is not None and stored.created_at < cutoff:  # expired: the key is free again
        session.delete(stored)
        session.flush()
        stored = None
    if stored is None:
        return None
    if stored.request_hash != request_hash:
        raise invalid_field(HEADER, "was already used with a different request body")
    session.rollback()  # nothing to write; releases the lock
    response = Response(stored.body, status=stored.status, mimetype="application/json")
    if stored.location:
        response.headers["Location"] = stored.location
    response.set_etag(etag_of(stored.body))
    response.headers["Idempotent-Replayed"] = "true"
    return response


def record(
    session: Session, owner: str, key: str, request_hash: str, status: int, document: bytes, location: str
) -> None:
    session.add(
        IdempotencyKey(
            owner=owner,
            key=key,
            request_hash=request_hash,
            status=status,
            body=document,
            location=location,
        )
    )
