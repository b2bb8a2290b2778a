"""The notes resource: owned by the caller, invisible to everyone else, cached per owner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _note(client: Any, title: str = "Groceries", **kwargs: object) -> dict:
    response = client.post("/notes", json={"title": title, "body": "eggs"}, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_crud_with_etags_and_merge_patch(client: Any) -> None:
    note = _note(client)
    path = f"/notes/{note['id']}"
    read = client.get(path)
    assert read.get_json() == note
    assert client.get(path, headers={"If-None-Match": read.headers["ETag"]}).status_code == 304
    stale = client.patch(path, json={"title": "x"}, headers={"If-Match": '"stale"'})
    assert stale.status_code == 412
    changed = client.patch(path, json={"body": None})
    assert changed.status_code == 422
    assert changed.get_json()["errors"] == [{"field": "body", "message": "may not be null"}]
    changed = client.patch(path, json={"title": "Shopping"}, headers={"If-Match": read.headers["ETag"]})
    assert changed.status_code == 200
    assert client.get(path).get_json()["title"] == "Shopping"
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404


def test_another_account_cannot_see_or_touch_a_note(
    client: Any, sign_up: Callable[..., Any], authed: Callable[..., Any]
) -> None:
    mine = _note(client)
    path = f"/notes/{mine['id']}"
    assert client.get("/notes").get_json()["items"] == [mine]  # my list, cached now
    assert client.get(path).headers["X-Cache"] == "MISS"
    assert client.get(path).headers["X-Cache"] == "HIT"
    other = authed(sign_up("other@example.com"))
    assert other.get("/notes").get_json()["items"] == []  # not my cached page
    for response in (other.get(path), other.patch(path, json={"title": "x"}), other.delete(path)):
        assert response.status_code == 404, response.status_code
    theirs = _note(other, "Theirs")
    assert [n["id"] for n in client.get("/notes").get_json()["items"]] == [mine["id"]]
    assert [n["id"] for n in other.get("/notes").get_json()["items"]] == [theirs["id"]]


def test_pages_and_validation(client: Any) -> None:
    ids = sorted(_note(client, f"n{i}")["id"] for i in range(3))
    first = client.get("/notes?limit=2").get_json()
    second = client.get(f"/notes?limit=2&cursor={first['next_cursor']}").get_json()
    assert [n["id"] for n in first["items"] + second["items"]] == ids
    assert second["next_cursor"] is None
    assert client.get("/notes?limit=0").status_code == 422
    bad = client.post("/notes", json={"title": "", "owner": "someone"})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.get_json()["errors"]} == {"title", "owner"}


def test_a_retried_create_with_a_key_creates_once(client: Any) -> None:
    first = client.post("/notes", json={"title": "Once"}, headers={"Idempotency-Key": "note-1"})
    again = client.post("/notes", json={"title": "Once"}, headers={"Idempotency-Key": "note-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert len(client.get("/notes").get_json()["items"]) == 1
