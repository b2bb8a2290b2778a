"""The example of docs/adding-a-resource.md: ``notes``, each visible to its owner only (admins
included: an admin sees none but their own). The test suite mounts it on an api app of its own
(services/api/tests/test_notes_example.py), so the guide's example runs as the toolkit does."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, StringConstraints
from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, func

from wharf_api.models import SCHEMA
from wharf_api.policy import Policy, Readers
from wharf_api.resource import Representation, Resource, Schema
from wharf_common.validation import NO_CONTROL_CHARACTERS

# A resource of the service declares its table on wharf_api.models.Base.metadata; the example keeps
# a metadata of its own, so that the service's schema stays without it.
metadata = MetaData(schema=SCHEMA)

NOTES = Table(
    "notes",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("title", String(200), nullable=False),
    Column("body", String(10_000), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)
]
Text = Annotated[str, StringConstraints(max_length=10_000, pattern=r"^[^\x00]*$")]  # no NUL: Postgres refuses it


class NoteCreate(Schema):
    # A create, then a change (as a merge patch): the document shows them, the policy test sends them.
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"title": "Groceries", "body": "eggs, flour"}, {"title": "Shopping"}]}
    )

    title: Title
    body: Text = ""


class NoteOut(Representation):
    title: str
    body: str


RESOURCE = Resource(
    "notes", item="note", table=NOTES, create=NoteCreate, out=NoteOut, policy=Policy(Readers.OWNER, admins=False)
)
