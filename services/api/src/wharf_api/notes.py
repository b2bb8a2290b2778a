"""The ``notes`` resource: each account's own notes (CRUD, pages, ETags, cached reads)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from flask import Blueprint, Response, url_for
from pydantic import BaseModel, ConfigDict, StringConstraints

from wharf_api import extensions, queries, resource
from wharf_api.documents import json_bytes
from wharf_api.models import NOTES, Note, note_json
from wharf_common.authn import current_principal, require_auth
from wharf_common.db import get_session
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation
from wharf_common.problems import Problem
from wharf_common.validation import parse_body

bp = Blueprint("notes", __name__, url_prefix="/notes")
KIND = "notes"
NOT_FOUND = Problem(404, "No note with this id.")  # also for another account's note: not even its existence shows
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Body = Annotated[str, StringConstraints(max_length=10_000)]


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    title: Title
    body: Body = ""


class NotePatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    title: Title | None = None
    body: Body | None = None


class NoteOut(BaseModel):
    id: uuid.UUID
    title: str
    body: str
    created_at: datetime
    updated_at: datetime


class NotePage(BaseModel):
    items: list[NoteOut]
    next_cursor: str | None


@bp.get("")
@operation(
    "List my notes, in id order",
    parameters=resource.LIST_PARAMETERS,
    responses={200: Doc("A page of notes", NotePage, headers=("X-Cache",)), 422: "Bad limit or cursor"},
    tags=("notes",),
)
@require_auth
def list_notes() -> Response:
    page, owner = resource.page_request(), current_principal().subject
    load = lambda: queries.page(table=NOTES, limit=page.limit, after=page.after, owner=owner)  # noqa: E731
    return resource.read_page(KIND, owner, page, load, note_json)


@bp.get("/<note_id>")
@operation(
    "Read one of my notes",
    parameters=(resource.IF_NONE_MATCH,),
    responses={200: Doc("The note", NoteOut, headers=("ETag", "X-Cache")), 404: "No such note of mine"},
    tags=("notes",),
)
@require_auth
def get_note(note_id: str) -> Response:
    key, owner = resource.item_id(note_id, NOT_FOUND), current_principal().subject
    load = lambda: queries.by_id(table=NOTES, key=key, owner=owner)  # noqa: E731
    return resource.read_item(KIND, key, load, note_json, NOT_FOUND, scope=owner)


@bp.patch("/<note_id>")
@operation(
    "Change one of my notes (JSON merge patch)",
    body=NotePatch,
    body_media_types=resource.MERGE_PATCH_TYPES,
    parameters=(resource.IF_MATCH,),
    responses={200: Doc("The note", NoteOut, headers=("ETag",)), 404: "No such note of mine", 412: "Stale If-Match"},
    tags=("notes",),
)
@require_auth
def patch_note(note_id: str) -> Response:
    changes = resource.merge_patch(NotePatch)
    note = _lock(note_id)
    for name, value in changes.items():
        setattr(note, name, value)
    note.updated_at = datetime.now(UTC)
    get_session().commit()
    extensions.of().cache.changed(KIND, str(note.id), scopes=[note.owner])
    return resource.json_response(json_bytes(note_json(note)), etag=True)


@bp.delete("/<note_id>")
@operation(
    "Delete one of my notes",
    parameters=(resource.IF_MATCH,),
    responses={204: Doc("Deleted"), 404: "No such note of mine", 412: "Stale If-Match"},
    tags=("notes",),
)
@require_auth
def delete_note(note_id: str) -> Response:
    note = _lock(note_id)
    get_session().delete(note)
    get_session().commit()
    extensions.of().cache.changed(KIND, str(note.id), scopes=[note.owner])
    return Response(status=204)


def _lock(note_id: str) -> Note:
    key = resource.item_id(note_id, NOT_FOUND)
    return resource.lock_for_write(Note, key, note_json, not_found=NOT_FOUND, others=None)


@bp.post("")
@operation(
    "Create a note (safe to retry with an Idempotency-Key)",
    body=NoteCreate,
    parameters=(resource.IDEMPOTENCY_KEY,),
    responses={
        201: Doc("Created", NoteOut, headers=("Location", "ETag", "Idempotent-Replayed")),
        409: "A request with this Idempotency-Key is still in progress",
        422: "Invalid fields, or the Idempotency-Key was used with another body",
    },
    tags=("notes",),
)
@require_auth
def create_note() -> Response:
    body, owner = parse_body(NoteCreate), current_principal().subject
    values = {"id": uuid.uuid4(), "owner": owner, "title": body.title, "body": body.body}
    location = lambda row: url_for("notes.get_note", note_id=str(row.id))  # noqa: E731
    response, created = resource.create(NOTES, values, note_json, location=location)
    if created is not None:
        extensions.of().cache.changed(KIND, scopes=[owner])
    return response
