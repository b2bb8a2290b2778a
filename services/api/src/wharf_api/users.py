"""The ``users`` resource."""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from wharf_api.models import User
from wharf_common.db import get_session, insert_unique
from wharf_common.problems import Problem
from wharf_common.validation import Email, Name, parse_body

bp = Blueprint("users", __name__, url_prefix="/users")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    email: Email


def _find(user_id: str) -> User:
    try:
        key = uuid.UUID(user_id)
    except ValueError:
        raise Problem(404, "No user with this id.") from None
    user = get_session().get(User, key)
    if user is None:
        raise Problem(404, "No user with this id.")
    return user


@bp.get("")
def list_users() -> ResponseReturnValue:
    """List users, oldest id first."""
    limit = request.args.get("limit", default=20, type=int)
    if not 1 <= limit <= 100:
        raise Problem(422, "limit must be between 1 and 100.", slug="validation-error", title="Unprocessable Content")
    users = get_session().scalars(select(User).order_by(User.id).limit(limit)).all()
    return jsonify(items=[u.to_json() for u in users], next_cursor=None)


@bp.get("/<user_id>")
def get_user(user_id: str) -> ResponseReturnValue:
    """Read one user."""
    return jsonify(_find(user_id).to_json())


@bp.post("")
def create_user() -> ResponseReturnValue:
    """Create a user."""
    body = parse_body(UserCreate)
    user = User(id=uuid.uuid4(), name=body.name, email=body.email)
    insert_unique(user, "A user with this email already exists.")
    response = jsonify(user.to_json())
    response.status_code = 201
    response.headers["Location"] = url_for("users.get_user", user_id=str(user.id))
    return response
