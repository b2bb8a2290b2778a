"""The framework ceiling: the least a Flask app can do per request, for `make bench` to compare with.

No auth, cache, database, logging or metrics; a fixed in-memory user document of the same shape and
size as the api's. It runs in the api image under the same gunicorn settings, replicas and limits,
behind an nginx with the same configuration (bench/compose.bench.yaml). Never part of the product.
"""

from __future__ import annotations

from flask import Flask, Response

app = Flask(__name__)

USER = (
    b'{"id":"0f8a4b9e-2d1c-4e7a-9b3f-5c6d7e8f9a0b","name":"Bench user 1","email":"bench-1@seed.example",'
    b'"owner":null,"created_at":"2026-01-01T00:00:00+00:00","updated_at":"2026-01-01T00:00:00+00:00"}'
)


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")


@app.get("/users/<user_id>")
def get_user(user_id: str) -> Response:  # noqa: ARG001 - the same route as the api, one fixed user
    return Response(USER, mimetype="application/json")
