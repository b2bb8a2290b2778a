"""What every resource of the api shares, so that a resource module is its schemas and its routes:
ids, JSON answers with ETags, keyset pages, cached reads, owned rows locked for a write (with
``If-Match``), JSON merge patches, and creates made safe to retry by an ``Idempotency-Key``.

See docs/adding-a-resource.md for how a resource uses it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import Response, request
from pydantic import BaseModel
from sqlalchemy import Row, Table
from sqlalchemy.exc import IntegrityError

from wharf_api import extensions, idempotency, queries
from wharf_api.documents import etag_of, json_bytes
from wharf_api.settings import ApiSettings
from wharf_common import extensions as common
from wharf_common import metrics
from wharf_common.authn import current_principal
from wharf_common.db import get_session
from wharf_common.openapi import Parameter
from wharf_common.openapi import Response as Doc
from wharf_common.pages import PageRequest, next_cursor
from wharf_common.problems import Problem
from wharf_common.validation import json_body, validate

M = TypeVar("M", bound=BaseModel)
ToJson = Callable[[Any], dict[str, Any]]

MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/json")

IF_NONE_MATCH = Parameter("If-None-Match", "header", {"type": "string"}, "ETag of a cached copy")
IF_MATCH = Parameter(
    "If-Match",
    "header",
    {"type": "string"},
    "Only apply if the resource still has this ETag (required when the server sets REQUIRE_IF_MATCH)",
)
# What every write to one item (PATCH, DELETE through lock_for_write) can answer besides success.
PRECONDITION_RESPONSES: dict[int, Doc | str] = {
    412: "If-Match does not match the current ETag",
    428: "If-Match is missing, and this server requires it (REQUIRE_IF_MATCH)",
}
IDEMPOTENCY_KEY = Parameter(
    idempotency.HEADER,
    "header",
    {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH},
    "Retries with the same key and body return the first response instead of creating again (24 h)",
)


def json_response(document: bytes, status: int = 200, *, cache: str | None = None, etag: bool = False) -> Response:
    response = Response(document, status=status, mimetype="application/json")
    if cache:
        response.headers["X-Cache"] = cache
    if etag:
        response.set_etag(etag_of(document))
    return response


# -- pages ---------------------------------------------------------------------------------------


def page_document(rows: Sequence[Row[Any]], page: PageRequest, to_json: ToJson) -> bytes:
    """``{"items": [...], "next_cursor": ...}`` from up to ``limit + 1`` rows in id order."""
    items = rows[: page.limit]
    cursor = next_cursor([row.id for row in rows], page.limit)
    return json_bytes({"items": [to_json(row) for row in items], "next_cursor": cursor})


# -- reads, through the cache ---------------------------------------------------------------------


def _looked_up(kind: str, hit: bool) -> str:
    metrics.CACHE_LOOKUPS.labels(kind, "hit" if hit else "miss").inc()
    return "HIT" if hit else "MISS"


def read_item(
    kind: str,
    key: uuid.UUID,
    load: Callable[[], Row[Any] | None],
    to_json: ToJson,
    not_found: Problem,
    *,
    scope: str = "all",
) -> Response:
    """One item, from the cache or from ``load()`` (then cached), with an ETag; 304 on If-None-Match.
    ``scope`` is who may see it: ``all``, or the owner's id when ``load`` only finds the caller's."""
    cache = extensions.of().cache
    lookup = cache.item(kind, str(key), scope)
    document = lookup.document
    state = _looked_up("item", hit=document is not None)
    if document is None:
        row = load()
        if row is None:
            raise not_found
        document = json_bytes(to_json(row))
        cache.fill(lookup, document)
    response = json_response(document, cache=state, etag=True)
    return response.make_conditional(request) if request.if_none_match else response


def read_page(
    kind: str, scope: str, page: PageRequest, load: Callable[[], Sequence[Row[Any]]], to_json: ToJson
) -> Response:
    """One page of a list; ``scope`` is who may see it (``all``, or an owner's id)."""
    cache = extensions.of().cache
    lookup = cache.page(kind, scope, f"{page.limit}:{page.cursor or ''}")
    if lookup.document is not None:
        return json_response(lookup.document, cache=_looked_up("page", hit=True))
    document = page_document(load(), page, to_json)
    cache.fill(lookup, document)
    return json_response(document, cache=_looked_up("page", hit=False))


# -- writes -------------------------------------------------------------------------------------


def lock_for_write(
    model: type[Any], key: uuid.UUID, to_json: ToJson, *, not_found: Problem, others: Problem | None
) -> Any:
    """The row, locked until the request's session commits, once the caller may change it and
    its ``If-Match`` (if any) holds. Only its ``owner`` or an admin may: anyone else gets
    ``others`` (a 403 where others may read the row), or ``not_found`` (where they may not even
    know it exists). Without ``If-Match`` where the settings require it: 428."""
    settings: ApiSettings = common.of().settings  # type: ignore[assignment]
    if settings.require_if_match and not request.if_match:
        raise Problem(
            428,
            "This server requires If-Match with the resource's current ETag on PATCH and DELETE.",
            slug="precondition-required",
        )
    row = queries.lock_by_id(get_session(), model=model, key=key)
    if row is None:
        raise not_found
    principal = current_principal()
    if not (principal.is_admin or (row.owner is not None and row.owner == principal.subject)):
        raise others or not_found
    if request.if_match and not request.if_match.contains(etag_of(json_bytes(to_json(row)))):
        raise Problem(412, "The resource has changed since the given ETag (If-Match).", slug="precondition-failed")
    return row


def merge_patch(model: type[M]) -> dict[str, Any]:
    """The changes a JSON merge patch (RFC 7396) asks for, validated by ``model`` (every field
    optional); ``null`` removes a member, and the members of these resources cannot be removed."""
    data = json_body(MERGE_PATCH_TYPES)
    if not isinstance(data, dict):
        raise Problem(400, "A merge patch must be a JSON object.", slug="malformed-json", title="Bad Request")
    nulls = [{"field": name, "message": "may not be null"} for name, value in data.items() if value is None]
    patch = validate(model, {k: v for k, v in data.items() if v is not None}, extra_errors=nulls)
    return patch.model_dump(exclude_unset=True)


def create(
    table: Table,
    values: dict[str, Any],
    to_json: ToJson,
    *,
    location: Callable[[Row[Any]], str],
    conflict: Problem | None = None,
) -> tuple[Response, Row[Any] | None]:
    """Insert ``values`` and answer 201 with the document, its ETag and ``location(row)``. With an
    ``Idempotency-Key``, the insert and its answer are recorded in one transaction, and a retry
    gets the recorded answer again (the row is then None: nothing was created). A unique
    constraint's violation is ``conflict``."""
    key = idempotency.key_from_request()
    session = get_session() if key is not None else None  # without a key: one statement, committed alone
    try:
        if session is None:
            row = queries.insert(table=table, values=values)
            document, where = json_bytes(to_json(row)), location(row)
        else:
            owner, request_hash = current_principal().subject, idempotency.fingerprint(request.get_data())
            replay = idempotency.begin(session, owner, key, request_hash)
            if replay is not None:
                return replay, None
            row = queries.insert(table=table, values=values, session=session)
            document, where = json_bytes(to_json(row)), location(row)
            idempotency.record(session, owner, key, request_hash, 201, document, where)
            session.commit()
    except IntegrityError:
        if session is not None:
            session.rollback()
        if conflict is None:
            raise
        raise conflict from None
    response = json_response(document, 201, etag=True)
    response.headers["Location"] = where
    return response, row
