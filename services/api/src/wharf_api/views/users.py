"""The ``users`` resource: CRUD with keyset pagination, ETags, cached reads and idempotent creates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import Blueprint, Response, url_for
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import IntegrityError

from wharf_api import extensions, queries, resource
from wharf_api.documents import json_bytes
from wharf_api.models import USERS, User, user_json
from wharf_common import pages
from wharf_common.authn import current_principal, require_auth
from wharf_common.db import get_session
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation
from wharf_common.problems import Problem
from wharf_common.validation import Email, Name, omitted, parse_body

bp = Blueprint("users", __name__, url_prefix="/users")
KIND = "users"
EVERYONE = "all"  # every signed-in account sees the same list

NOT_FOUND = Problem(404, "No user with this id.")
NOT_YOURS = Problem(403, "Only the user's owner or an admin may change it.", slug="forbidden")
EMAIL_TAKEN = Problem(409, "A user with this email already exists.", slug="conflict")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    email: Email


class UserPatch(BaseModel):
    """JSON merge patch (RFC 7396): members present are replaced; ``null`` is refused (both are required)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name = omitted()
    email: Email = omitted()


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


WRITE_RESPONSES = {
    403: "Not the owner and not an admin",
    404: "No user with this id",
    **resource.PRECONDITION_RESPONSES,
}


@bp.get("")
@operation(
    "List users, in id order, one page at a time",
    parameters=pages.LIST_PARAMETERS,
    responses={200: Doc("A page of users", UserPage, headers=("X-Cache",)), 422: "Bad limit or cursor"},
    tags=("users",),
)
@require_auth
def list_users() -> Response:
    page = pages.page_request()
    load = lambda: queries.page(table=USERS, limit=page.limit, after=page.after)  # noqa: E731
    return resource.read_page(KIND, EVERYONE, page, load, user_json)


@bp.get("/<uuid:user_id>")
@operation(
    "Read one user",
    parameters=(resource.IF_NONE_MATCH,),
    responses={
        200: Doc("The user", UserOut, headers=("ETag", "X-Cache")),
        304: Doc("Not modified (If-None-Match matched)", headers=("ETag",)),
        404: "No user with this id",
    },
    tags=("users",),
)
@require_auth
def get_user(user_id: uuid.UUID) -> Response:
    return resource.read_item(KIND, user_id, lambda: queries.by_id(table=USERS, key=user_id), user_json, NOT_FOUND)


@bp.patch("/<uuid:user_id>")
@operation(
    "Change a user's name or email (JSON merge patch)",
    body=UserPatch,
    body_media_types=resource.MERGE_PATCH_TYPES,
    parameters=(resource.IF_MATCH,),
    responses={200: Doc("The changed user", UserOut, headers=("ETag",)), 409: "Email taken", **WRITE_RESPONSES},
    tags=("users",),
)
@require_auth
def patch_user(user_id: uuid.UUID) -> Response:
    changes = resource.merge_patch(UserPatch)
    session = get_session()
    user = _lock(user_id)
    if any(getattr(user, name) != value for name, value in changes.items()):
        for name, value in changes.items():
            setattr(user, name, value)
        user.updated_at = datetime.now(UTC)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise EMAIL_TAKEN from None
        extensions.of().cache.changed(KIND, str(user.id), scopes=[EVERYONE])
    else:
        session.rollback()
    return resource.json_response(json_bytes(user_json(user)), etag=True)


@bp.delete("/<uuid:user_id>")
@operation(
    "Delete a user",
    parameters=(resource.IF_MATCH,),
    responses={204: Doc("Deleted"), **WRITE_RESPONSES},
    tags=("users",),
)
@require_auth
def delete_user(user_id: uuid.UUID) -> Response:
    session = get_session()
    user = _lock(user_id)
    session.delete(user)
    session.commit()
    extensions.of().cache.changed(KIND, str(user.id), scopes=[EVERYONE])
    return Response(status=204)


def _lock(user_id: uuid.UUID) -> User:
    """Every account may read every user; only its owner or an admin may change it (else 403)."""
    return resource.lock_for_write(User, user_id, user_json, not_found=NOT_FOUND, others=NOT_YOURS)


@bp.post("")
@operation(
    "Create a user (safe to retry with an Idempotency-Key)",
    body=UserCreate,
    parameters=(resource.IDEMPOTENCY_KEY,),
    responses={
        201: Doc("Created", UserOut, headers=("Location", "ETag", "Idempotent-Replayed")),
        409: "Email taken, or a request with this Idempotency-Key is still in progress",
        422: "Invalid fields, or the Idempotency-Key was used with another body",
    },
    tags=("users",),
)
@require_auth
def create_user() -> Response:
    body = parse_body(UserCreate)
    values = {"id": uuid.uuid4(), "name": body.name, "email": body.email, "owner": current_principal().subject}
    response, created = resource.create(
        USERS,
        values,
        user_json,
        location=lambda row: url_for("users.get_user", user_id=str(row.id)),
        conflict=EMAIL_TAKEN,
    )
    if created is not None:
        extensions.of().cache.changed(KIND, scopes=[EVERYONE])
    return response
