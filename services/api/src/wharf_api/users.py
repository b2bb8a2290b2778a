"""The ``users`` resource: CRUD with keyset pagination, ETags, cache-aside and idempotent creates."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Row, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from wharf_api import idempotency
from wharf_api.cache import UserCache
from wharf_api.documents import etag_of, json_bytes
from wharf_api.models import USERS, User, user_json
from wharf_api.settings import ApiSettings
from wharf_common import metrics
from wharf_common.authn import Principal, current_principal, require_auth
from wharf_common.db import autocommit_connection, get_session
from wharf_common.openapi import Parameter, operation
from wharf_common.openapi import Response as Doc
from wharf_common.problems import Problem
from wharf_common.validation import Email, Name, invalid_field, json_body, parse_body, validate

bp = Blueprint("users", __name__, url_prefix="/users")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MERGE_PATCH = "application/merge-patch+json"


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    email: Email


class UserPatch(BaseModel):
    """JSON merge patch (RFC 7396): members present are replaced; ``null`` is refused (both are required)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name | None = None
    email: Email | None = None


class UserOut(BaseModel):
    id: uuid.UUID
    name: str
    email: str
    owner: str | None
    created_at: datetime
    updated_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


def _cache() -> UserCache:
    return current_app.extensions["wharf.api.cache"]


def _settings() -> ApiSettings:
    return current_app.config["SETTINGS"]


def _json_response(document: bytes, status: int = 200, *, cache: str | None = None, etag: bool = False) -> Response:
    response = Response(document, status=status, mimetype="application/json")
    if cache:
        response.headers["X-Cache"] = cache
    if etag:
        response.set_etag(etag_of(document))
    return response


def _looked_up(kind: str, hit: bool) -> str:
    metrics.child(metrics.CACHE_LOOKUPS, kind, "hit" if hit else "miss").inc()
    return "HIT" if hit else "MISS"


def _not_found() -> Problem:
    return Problem(404, "No user with this id.")


def _email_taken() -> Problem:
    return Problem(409, "A user with this email already exists.", slug="conflict")


def _user_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _not_found() from None


# -- pagination ---------------------------------------------------------------------------------


def encode_cursor(last_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if len(cursor) != 22 or len(raw) != 16:
            raise ValueError(cursor)
        return uuid.UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise invalid_field("cursor", "not a cursor returned by this API") from None


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid_field("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


LIST_PARAMETERS = (
    Parameter("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "Page size (default 20)"),
    Parameter("cursor", "query", {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}, "next_cursor of the last page"),
)


@bp.get("")
@operation(
    "List users, in id order, one page at a time",
    parameters=LIST_PARAMETERS,
    responses={200: Doc("A page of users", UserPage, headers=("X-Cache",)), 422: "Bad limit or cursor"},
    tags=("users",),
)
@require_auth
def list_users() -> Response:
    limit = _limit()
    cursor = request.args.get("cursor") or None
    after = decode_cursor(cursor) if cursor is not None else None
    cached, generation = _cache().get_page(limit, cursor)
    if cached is not None:
        return _json_response(cached, cache=_looked_up("page", hit=True))
    query = select(USERS).order_by(USERS.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(USERS.c.id > after)
    rows = autocommit_connection().execute(query).all()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].id) if len(rows) > limit else None
    document = json_bytes({"items": [user_json(row) for row in page], "next_cursor": next_cursor})
    _cache().fill_page(limit, cursor, document, generation)
    return _json_response(document, cache=_looked_up("page", hit=False))


# -- single users -------------------------------------------------------------------------------

USER_BY_ID = select(USERS).where(USERS.c.id == bindparam("id"))


@bp.get("/<user_id>")
@operation(
    "Read one user",
    parameters=(Parameter("If-None-Match", "header", {"type": "string"}, "ETag of a cached copy"),),
    responses={
        200: Doc("The user", UserOut, headers=("ETag", "X-Cache")),
        304: Doc("Not modified (If-None-Match matched)", headers=("ETag",)),
        404: "No user with this id",
    },
    tags=("users",),
)
@require_auth
def get_user(user_id: str) -> Response:
    key = str(_user_id(user_id))
    document = _cache().get_user(key)
    state = _looked_up("user", hit=document is not None)
    if document is None:
        generation = _cache().generation()
        row = autocommit_connection().execute(USER_BY_ID, {"id": uuid.UUID(key)}).one_or_none()
        if row is None:
            raise _not_found()
        document = json_bytes(user_json(row))
        _cache().fill_user(key, document, generation)
    response = _json_response(document, cache=state, etag=True)
    return response.make_conditional(request) if request.if_none_match else response


def _lock_for_write(user_id: str, principal: Principal) -> User:
    """The user row, locked until commit, once the caller may change it and its If-Match holds."""
    user = get_session().get(User, _user_id(user_id), with_for_update=True)
    if user is None:
        raise _not_found()
    if not (principal.is_admin or (user.owner is not None and user.owner == principal.subject)):
        raise Problem(403, "Only the user's owner or an admin may change it.", slug="forbidden")
    if request.if_match and not request.if_match.contains(etag_of(json_bytes(user.to_json()))):
        raise Problem(412, "The user has changed since the given ETag (If-Match).", slug="precondition-failed")
    return user


WRITE_RESPONSES = {
    403: "Not the owner and not an admin",
    404: "No user with this id",
    412: "If-Match does not match the current ETag",
}
IF_MATCH = Parameter("If-Match", "header", {"type": "string"}, "Only apply if the user still has this ETag")


@bp.patch("/<user_id>")
@operation(
    "Change a user's name or email (JSON merge patch)",
    body=UserPatch,
    body_media_types=(MERGE_PATCH, "application/json"),
    parameters=(IF_MATCH,),
    responses={200: Doc("The changed user", UserOut, headers=("ETag",)), 409: "Email taken", **WRITE_RESPONSES},
    tags=("users",),
)
@require_auth
def patch_user(user_id: str) -> Response:
    principal = current_principal()
    data = json_body()
    if not isinstance(data, dict):
        raise Problem(400, "A merge patch must be a JSON object.", slug="malformed-json", title="Bad Request")
    nulls = [{"field": name, "message": "may not be null"} for name, value in data.items() if value is None]
    patch = validate(UserPatch, {k: v for k, v in data.items() if v is not None}, extra_errors=nulls)
    session = get_session()
    user = _lock_for_write(user_id, principal)
    changes = patch.model_dump(exclude_unset=True)
    if any(getattr(user, name) != value for name, value in changes.items()):
        for name, value in changes.items():
            setattr(user, name, value)
        user.updated_at = datetime.now(UTC)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise _email_taken() from None
        _cache().invalidate(str(user.id))
    else:
        session.rollback()
    return _json_response(json_bytes(user.to_json()), etag=True)


@bp.delete("/<user_id>")
@operation(
    "Delete a user",
    parameters=(IF_MATCH,),
    responses={204: Doc("Deleted"), **WRITE_RESPONSES},
    tags=("users",),
)
@require_auth
def delete_user(user_id: str) -> Response:
    session = get_session()
    user = _lock_for_write(user_id, current_principal())
    session.delete(user)
    session.commit()
    _cache().invalidate(str(user.id))
    return Response(status=204)


# -- create -------------------------------------------------------------------------------------


# Core, not an ORM object through the unit of work (~200 us of CPU less per create in one worker);
# RETURNING brings the server defaults (timestamps) the response needs.
INSERT_USER = insert(USERS).returning(*USERS.c)


@bp.post("")
@operation(
    "Create a user (safe to retry with an Idempotency-Key)",
    body=UserCreate,
    parameters=(
        Parameter(
            "Idempotency-Key",
            "header",
            {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH},
            "Retries with the same key and body return the first response instead of creating again (24 h)",
        ),
    ),
    responses={
        201: Doc("Created", UserOut, headers=("Location", "ETag", "Idempotent-Replayed")),
        409: "Email taken, or a request with this Idempotency-Key is still in progress",
        422: "Invalid fields, or the Idempotency-Key was used with another body",
    },
    tags=("users",),
)
@require_auth
def create_user() -> Response:
    principal = current_principal()
    key = idempotency.key_from_request()
    body = parse_body(UserCreate)
    values = {"id": uuid.uuid4(), "name": body.name, "email": body.email, "owner": principal.subject}
    if key is None:
        # One statement, committed on its own: no BEGIN and COMMIT round trips.
        try:
            user = autocommit_connection().execute(INSERT_USER, values).one()
        except IntegrityError:
            raise _email_taken() from None
        document, location = _created(user)
    else:
        created = _create_once(principal, key, values)
        if isinstance(created, Response):
            return created  # the first answer to this key, replayed
        document, location = created
    _cache().invalidate(str(values["id"]))
    response = _json_response(document, 201, etag=True)
    response.headers["Location"] = location
    return response


def _created(user: Row[Any]) -> tuple[bytes, str]:
    """The new user's document and its Location."""
    return json_bytes(user_json(user)), url_for("users.get_user", user_id=str(user.id))


def _create_once(principal: Principal, key: str, values: dict[str, object]) -> Response | tuple[bytes, str]:
    """Insert and record the answer under the Idempotency-Key in one transaction, or replay it."""
    session = get_session()
    request_hash = idempotency.fingerprint(request.get_data())
    replay = idempotency.begin(session, principal.subject, key, request_hash)
    if replay is not None:
        return replay
    try:
        user = session.execute(INSERT_USER, values).one()
        document, location = _created(user)
        idempotency.record(session, principal.subject, key, request_hash, 201, document, location)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _email_taken() from None
    return document, location
