"""Every resource the api serves, and the guide's example, against the access policy it declares:
a new resource is in this matrix as soon as it is registered (wharf_api.views.RESOURCES)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ConfigDict, ValidationError

from examples.notes import notes
from wharf_api import views
from wharf_api.policy import Policy, Readers
from wharf_api.resource import Resource, Schema, example, mount, registered

ROOT = Path(__file__).resolve().parents[3]

# (the session app that serves it, the resource): the service's own, then the guide's example.
SERVED = [pytest.param("migrated_app", r, id=r.name) for r in views.RESOURCES] + [
    pytest.param("notes_app", notes.RESOURCE, id="notes-example")
]
CALLERS = ("owner", "another account", "admin", "anonymous")


def expected(policy: Policy, caller: str) -> dict[str, Any]:
    """What ``caller`` gets for the owner's row, as the policy's words say (not from its code):
    the list's status and whether the row is in it, then read, patch and delete."""
    if caller == "anonymous":
        return {"list": (401, False), "read": 401, "patch": 401, "delete": 401}
    writes = caller == "owner" or (caller == "admin" and policy.admins)
    reads = writes or policy.read is Readers.EVERY_ACCOUNT
    refused = 403 if reads else 404  # may read but not write: 403; may not even read: as if it did not exist
    return {
        "list": (200, reads),
        "read": 200 if reads else 404,
        "patch": 200 if writes else refused,
        "delete": 204 if writes else refused,
    }


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("app", "resource"), SERVED, indirect=["app"])
def test_every_resource_keeps_its_declared_policy(
    app: Flask,
    resource: Resource,
    caller: str,
    client: Any,
    sign_up: Callable[..., Any],
    authed: Callable[..., Any],
    anonymous: FlaskClient,
) -> None:
    path = f"/{resource.name}"
    created = client.post(path, json=example(resource.create_schema))
    assert created.status_code == 201, created.get_json()
    row = created.get_json()
    item = f"{path}/{row['id']}"
    # The owner's reads first: what they fill in the cache must not reach anyone who may not read.
    assert client.get(path).status_code == client.get(item).status_code == 200
    etag = client.get(item).headers["ETag"]
    callers = {
        "owner": lambda: client,
        "another account": lambda: authed(sign_up("other@example.com")),
        "admin": lambda: authed(sign_up("admin@example.com", admin=True)),
        "anonymous": lambda: anonymous,
    }
    acting = callers[caller]()

    listed = acting.get(path)
    responses = {
        "read": acting.get(item),
        "patch": acting.patch(item, json=example(resource.patch_schema)),
        "delete": acting.delete(item),
    }
    shown = listed.status_code == 200 and row["id"] in [found["id"] for found in listed.get_json()["items"]]
    actual = {"list": (listed.status_code, shown), **{op: r.status_code for op, r in responses.items()}}
    assert actual == expected(resource.policy, caller)
    for response in (listed, *responses.values()):
        if response.status_code >= 400:
            assert response.mimetype == "application/problem+json"
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    after = client.get(item)
    if responses["delete"].status_code == 204:
        assert after.status_code == 404
    elif responses["patch"].status_code != 200:  # refused writes changed nothing
        assert after.status_code == 200
        assert after.headers["ETag"] == etag


def test_the_matrix_covers_every_registered_resource(migrated_app: Flask, notes_app: Flask) -> None:
    assert registered(migrated_app) == views.RESOURCES
    assert registered(notes_app) == (*views.RESOURCES, notes.RESOURCE)


@pytest.mark.parametrize("resource", views.RESOURCES, ids=lambda r: r.name)
def test_every_resource_is_documented(resource: Resource, migrated_app: Flask) -> None:
    """The places the guide lists that do not derive from the code: the READMEs' resource tables."""
    assert f"`/api/{resource.name}`" in (ROOT / "README.md").read_text()
    assert f"## Resource: `{resource.name}`" in (ROOT / "services/api/README.md").read_text()
    document = migrated_app.test_client().get("/openapi.json").get_json()
    assert f"`/{resource.name}`: {resource.policy.describe()}" in document["info"]["description"]


def test_a_route_added_by_hand_stops_the_app() -> None:
    """Every route of a resource is the toolkit's, so the policy holds on each; a route added to
    its blueprint some other way is refused when the app mounts it."""
    again = Resource(
        "notes",
        item="note",
        table=notes.NOTES,
        create=notes.NoteCreate,
        out=notes.NoteOut,
        policy=notes.RESOURCE.policy,
    )
    again.blueprint.add_url_rule("/<uuid:note_id>/share", "share", lambda note_id: "", methods=["POST"])
    with pytest.raises(TypeError, match="routes not made by the toolkit"):
        mount(Flask(__name__), again)


def test_the_merge_patch_is_the_create_with_every_member_optional() -> None:
    patch = notes.RESOURCE.patch_schema
    schema, create = patch.model_json_schema(), notes.NoteCreate.model_json_schema()
    assert patch.__name__ == "NotePatch"
    assert "required" not in schema
    assert schema["additionalProperties"] is False
    assert schema["properties"]["title"] == create["properties"]["title"]  # type and constraints kept
    assert "default" not in schema["properties"]["body"]  # the create's default is not the patch's
    assert schema["examples"] == [{"title": "Shopping"}]  # the create's second example
    assert patch.model_validate({}).model_dump(exclude_unset=True) == {}
    assert patch.model_validate({"title": "  Soup "}).model_dump(exclude_unset=True) == {"title": "Soup"}
    with pytest.raises(ValidationError):
        patch.model_validate({"title": ""})


def test_a_declaration_that_cannot_work_is_refused_at_import() -> None:
    class Untitled(Schema):  # no example
        title: str

    class Unknown(Schema):
        model_config = ConfigDict(json_schema_extra={"examples": [{"colour": "blue"}]})
        colour: str  # no such column

    declaration = {
        "item": "note",
        "table": notes.NOTES,
        "create": notes.NoteCreate,
        "out": notes.NoteOut,
        "policy": notes.RESOURCE.policy,
    }
    with pytest.raises(TypeError, match="examples"):
        Resource("notes", **{**declaration, "create": Untitled, "patch": notes.RESOURCE.patch_schema})
    with pytest.raises(TypeError, match="examples"):
        Resource("notes", **{**declaration, "create": Untitled})
    with pytest.raises(TypeError, match="colour"):
        Resource("notes", **{**declaration, "patch": Unknown})
    with pytest.raises(TypeError, match="required patch members"):
        Resource("notes", **{**declaration, "patch": notes.NoteCreate})


def test_the_guide_quotes_the_example_as_it_is() -> None:
    """Every Python block of docs/adding-a-resource.md stands in examples/notes/ as it is."""
    guide = (ROOT / "docs/adding-a-resource.md").read_text()
    blocks = [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)^\s*```", guide, re.S | re.M)]
    example = "\n".join(path.read_text() for path in sorted((ROOT / "examples/notes").glob("*.py")))
    assert blocks
    for block in blocks:
        assert block in example, block
