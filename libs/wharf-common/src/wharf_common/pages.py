"""Keyset pages, the same for every list of every service: ``?limit=&cursor=`` in, ``{"items": [...],
"next_cursor": ...}`` out, where a cursor is the last item's id (a UUID, base64url, 22 characters)."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass

from flask import request

from wharf_common.openapi import Parameter
from wharf_common.validation import invalid_field

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

CURSOR = "[A-Za-z0-9_-]{22}"  # a UUID's 16 bytes in base64url, unpadded

LIST_PARAMETERS = (
    Parameter("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "Page size (default 20)"),
    Parameter("cursor", "query", {"type": "string", "pattern": f"^{CURSOR}$"}, "next_cursor of the last page"),
)


@dataclass(frozen=True)
class PageRequest:
    limit: int
    cursor: str | None  # as the client sent it (part of a cache key)
    after: uuid.UUID | None  # the last id of the previous page


def encode_cursor(last_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> uuid.UUID:
    """The id in ``cursor``, which must be what its schema says (an empty one too is refused)."""
    if re.fullmatch(CURSOR, cursor) is None:
        raise invalid_field("cursor", "not a cursor returned by this API")
    return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=="))


def page_request() -> PageRequest:
    """``limit`` and ``cursor`` from the query string (422 naming the bad one)."""
    raw = request.args.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if not (raw.isascii() and raw.isdecimal() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_LIMIT:
            raise invalid_field("limit", f"must be an integer from 1 to {MAX_LIMIT}")
        limit = int(raw)
    cursor = request.args.get("cursor")
    return PageRequest(limit, cursor, decode_cursor(cursor) if cursor is not None else None)


def next_cursor(ids: list[uuid.UUID], limit: int) -> str | None:
    """The cursor of the page after one read as ``limit + 1`` rows (ids in page order), or None."""
    return encode_cursor(ids[limit - 1]) if len(ids) > limit else None
