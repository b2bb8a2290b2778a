"""The ``users`` resource: every signed-in account reads them; the owner or an admin changes them."""

from __future__ import annotations

from pydantic import ConfigDict

from wharf_api.models import USERS
from wharf_api.policy import Policy, Readers
from wharf_api.resource import Representation, Resource, Schema
from wharf_common.problems import Problem
from wharf_common.validation import Email, Name

EMAIL_TAKEN = Problem(409, "A user with this email already exists.", slug="conflict")


class UserCreate(Schema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "Ada Lovelace", "email": "ada@example.com"},
                {"name": "Augusta Ada King", "email": "ada.king@example.com"},
            ]
        }
    )

    name: Name
    email: Email  # stored lower-cased; unique whatever the case


class UserOut(Representation):
    name: str
    email: str
    owner: str | None  # None: created before rows had owners (only admins may change it)


RESOURCE = Resource(
    "users",
    item="user",
    table=USERS,
    create=UserCreate,
    out=UserOut,
    policy=Policy(read=Readers.EVERY_ACCOUNT, admins=True),
    conflict=EMAIL_TAKEN,
)
