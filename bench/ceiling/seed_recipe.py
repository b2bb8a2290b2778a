"""The seed's recipe, a reference for `make bench`: what a new user first builds. A bare Flask users
API (in memory; no auth, cache, database, logging or metrics) run as `gunicorn -w 4` sync workers with
no other setting, behind nginx (bench/compose.bench.yaml). Never part of the product.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue

app = Flask(__name__)

# The same users in every worker (ids derived from their number), so any worker answers any id.
_NOW = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
USERS = {
    str(user_id): {
        "id": str(user_id),
        "name": f"Bench user {n}",
        "email": f"bench-{n}@seed.example",
        "owner": None,
        "created_at": _NOW,
        "updated_at": _NOW,
    }
    for n in range(1, 101)
    for user_id in [uuid.uuid5(uuid.NAMESPACE_URL, f"wharf-bench-seed-recipe/{n}")]
}


@app.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@app.get("/users")
def list_users() -> ResponseReturnValue:
    return jsonify(items=list(USERS.values()))


@app.get("/users/<user_id>")
def get_user(user_id: str) -> ResponseReturnValue:
    user = USERS.get(user_id)
    if user is None:
        abort(404)
    return jsonify(user)


@app.post("/users")
def create_user() -> ResponseReturnValue:
    body = request.get_json(force=True)
    user = {"id": str(uuid.uuid4()), "name": body.get("name"), "email": body.get("email"), "owner": None}
    USERS[user["id"]] = user  # this worker's memory only: the recipe's own shortcut
    return jsonify(user), 201
