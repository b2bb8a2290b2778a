from __future__ import annotations

import uuid

from flask.testing import FlaskClient


def test_create_then_read(client: FlaskClient) -> None:
    created = client.post("/users", json={"name": "Ada", "email": " Ada@Example.COM "})
    assert created.status_code == 201
    body = created.get_json()
    assert body["email"] == "ada@example.com"
    assert created.headers["Location"] == f"/users/{body['id']}"

    fetched = client.get(created.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.get_json() == body
    listed = client.get("/users").get_json()
    assert [u["id"] for u in listed["items"]] == [body["id"]]


def test_missing_user_is_404_problem(client: FlaskClient) -> None:
    for user_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = client.get(f"/users/{user_id}")
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["status"] == 404


def test_create_without_name_lists_failing_fields(client: FlaskClient) -> None:
    response = client.post("/users", json={"email": "nope", "id": "x"})
    assert response.status_code == 422
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert fields == {"name", "email", "id"}


def test_duplicate_email_is_409(client: FlaskClient) -> None:
    assert client.post("/users", json={"name": "A", "email": "dup@example.com"}).status_code == 201
    response = client.post("/users", json={"name": "B", "email": "DUP@example.com"})
    assert response.status_code == 409


def test_body_must_be_json(client: FlaskClient) -> None:
    assert client.post("/users", data="name=x", content_type="text/plain").status_code == 415
    malformed = client.post("/users", data="{", content_type="application/json")
    assert malformed.status_code == 400
    assert malformed.mimetype == "application/problem+json"
