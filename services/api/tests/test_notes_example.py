"""The example resource of docs/adding-a-resource.md (examples/notes/), mounted on an api app of its
own: owned by the caller, invisible to every other account (admins included), cached per owner.
Its access policy is also walked by test_resources.py, with the service's resources."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from openapi_spec_validator import validate
from sqlalchemy import inspect

from examples.notes import migration
from wharf_common import extensions as common

pytestmark = pytest.mark.parametrize("app", ["notes_app"], indirect=True)


def _note(client: Any, title: str = "Groceries", **kwargs: Any) -> dict[str, Any]:
    response = client.post("/notes", json={"title": title, "body": "eggs"}, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_crud_with_etags_and_merge_patch(client: Any) -> None:
    note = _note(client)
    path = f"/notes/{note['id']}"
    assert set(note) == {"id", "title", "body", "created_at", "updated_at"}  # NoteOut: no owner shown
    read = client.get(path)
    assert read.get_json() == note
    assert client.get(path, headers={"If-None-Match": read.headers["ETag"]}).status_code == 304
    assert client.patch(path, json={"title": "x"}, headers={"If-Match": '"stale"'}).status_code == 412
    refused = client.patch(path, json={"body": None})
    assert refused.status_code == 422
    assert refused.get_json()["errors"] == [{"field": "body", "message": "may not be null"}]
    changed = client.patch(path, json={"title": "Shopping"}, headers={"If-Match": read.headers["ETag"]})
    assert changed.status_code == 200
    assert changed.get_json()["updated_at"] > note["updated_at"]
    assert client.get(path).get_json() == changed.get_json()
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404


def test_another_account_sees_nothing_not_even_from_the_cache(
    client: Any, sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    mine = _note(client)
    path = f"/notes/{mine['id']}"
    assert client.get("/notes").get_json()["items"] == [mine]  # my page, cached now
    assert [client.get(path).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    for other in (authed(sign_up("other@example.com")), authed(sign_up("admin@example.com", admin=True))):
        assert other.get("/notes").get_json()["items"] == []
        for response in (other.get(path), other.patch(path, json={"title": "x"}), other.delete(path)):
            assert response.status_code == 404, response.status_code
        theirs = _note(other, "Theirs")
        assert [n["id"] for n in other.get("/notes").get_json()["items"]] == [theirs["id"]]
    assert [n["id"] for n in client.get("/notes").get_json()["items"]] == [mine["id"]]


def test_pages_validation_and_retried_creates(client: Any) -> None:
    ids = sorted(_note(client, f"n{i}")["id"] for i in range(3))
    first = client.get("/notes?limit=2").get_json()
    second = client.get(f"/notes?limit=2&cursor={first['next_cursor']}").get_json()
    assert [n["id"] for n in first["items"] + second["items"]] == ids
    assert second["next_cursor"] is None
    bad = client.post("/notes", json={"title": " ", "body": "a\x00b", "owner": "someone"})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.get_json()["errors"]} == {"title", "body", "owner"}
    once = [client.post("/notes", json={"title": "Once"}, headers={"Idempotency-Key": "note-1"}) for _ in range(2)]
    assert [r.status_code for r in once] == [201, 201]
    assert once[1].headers["Idempotent-Replayed"] == "true"
    assert once[0].get_json() == once[1].get_json()
    assert len(client.get("/notes").get_json()["items"]) == 4


def test_the_document_describes_the_example(app: Flask) -> None:
    document = app.test_client().get("/openapi.json").get_json()
    validate(document)
    operations = document["paths"]["/notes/{note_id}"]
    assert set(operations) == {"get", "patch", "delete"}
    assert "403" not in operations["patch"]["responses"]  # who may not change a note may not see it either
    assert operations["patch"]["summary"] == "Change one note's title or body (JSON merge patch)"
    assert "Only the owner" in operations["delete"]["description"]
    patch = document["components"]["schemas"]["NotePatch"]
    assert "required" not in patch
    assert all("default" not in member for member in patch["properties"].values())
    examples = document["components"]["schemas"]["NoteCreate"]["examples"]
    assert examples == [{"title": "Groceries", "body": "eggs, flour"}, {"title": "Shopping"}]
    assert "NotePage" in document["components"]["schemas"]


def test_the_migration_goes_down_and_up_again(app: Flask, run_migration: Callable[..., None]) -> None:
    def tables() -> set[str]:
        with common.of(app).engine.connect() as connection:
            return set(inspect(connection).get_table_names(schema="api"))

    for step, present in ((migration.downgrade, False), (migration.upgrade, True)):
        run_migration(app, step)
        assert ("notes" in tables()) is present
