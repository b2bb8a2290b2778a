"""Accounts: register, the signed-in account, password change."""

from __future__ import annotations

import logging
import uuid
from typing import TypeVar

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from wharf_auth import activity, events, extensions, queries, sessions
from wharf_auth import passwords as policy
from wharf_auth.models import Account
from wharf_auth.schemas import AccountOut, MeOut, PasswordChangeBody, RegisterBody
from wharf_auth.views.recovery import queue_verification
from wharf_common.authn import unauthorized
from wharf_common.db import get_session, insert_unique
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation
from wharf_common.problems import Problem
from wharf_common.validation import json_object, validate

bp = Blueprint("accounts", __name__)
M = TypeVar("M", bound=BaseModel)


@bp.post("/register")
@operation(
    "Create an account",
    body=RegisterBody,
    responses={201: Doc("The new account", AccountOut), 409: "An account with this email exists"},
    tags=("accounts",),
)
def register() -> ResponseReturnValue:
    """Create an account (role ``user``; roles cannot be chosen here) and mail a verification link."""
    body = _parse_with_password_policy(RegisterBody, "password", None)
    password_hash = extensions.of().passwords.hash(body.password)
    account = Account(id=uuid.uuid4(), email=body.email, name=body.name, password_hash=password_hash)
    insert_unique(account, "An account with this email already exists.")
    events.emit("register", account_id=account.id)
    queue_verification(account.email)
    return jsonify(_account_json(account)), 201


@bp.get("/me")
@operation("The signed-in account", responses={200: Doc("The account", MeOut)}, tags=("accounts",), bearer=True)
def me() -> ResponseReturnValue:
    account, _claims = sessions.current_account()
    document = {
        "id": str(account.id),
        "email": account.email,
        "email_verified": account.email_verified_at is not None,
        "name": account.name,
        "roles": list(account.roles),
    }
    return jsonify(document), 200, {"Cache-Control": "no-store"}


@bp.post("/password")
@operation(
    "Change the password; every session ends",
    body=PasswordChangeBody,
    responses={204: Doc("Changed"), 403: "The current password is wrong"},
    tags=("accounts",),
    bearer=True,
)
def change_password() -> ResponseReturnValue:
    signed_in, _claims = sessions.current_account()
    body = _parse_with_password_policy(PasswordChangeBody, "new_password", signed_in.email)
    account = queries.account_by_id(get_session(), account_id=signed_in.id)
    if account is None:  # deleted since the check
        raise unauthorized()
    passwords = extensions.of().passwords
    if not passwords.verify(account.password_hash, body.current_password):
        events.emit("password_change_failure", account_id=account.id, level=logging.WARNING)
        raise Problem(403, "The current password is wrong.", slug="wrong-password")
    session = get_session()
    everything_before = sessions.set_password(session, account, passwords.hash(body.new_password))
    activity.record(session, account.id, activity.PASSWORD_CHANGED)
    session.commit()
    sessions.announce(everything_before)
    events.emit("password_changed", account_id=account.id)
    return "", 204


def _parse_with_password_policy(model: type[M], field: str, email: str | None) -> M:
    """The body as ``model``, or a 422 listing every failing field: the password policy's reasons
    for ``field`` together with the schema's errors for the others."""
    data = json_object()
    password = data.get(field)
    context = email if email is not None else data.get("email")
    reasons = (
        policy.problems(password, email=context.strip() if isinstance(context, str) else None)
        if isinstance(password, str)
        else []
    )
    return validate(model, data, extra_errors=[{"field": field, "message": f"Password {r}."} for r in reasons])


def _account_json(account: Account) -> dict[str, str]:
    return {
        "id": str(account.id),
        "email": account.email,
        "name": account.name,
        "created_at": account.created_at.isoformat(),
    }
