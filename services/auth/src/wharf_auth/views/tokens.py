"""Sign-in sessions: login, refresh, logout."""

from __future__ import annotations

import logging
import uuid

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from wharf_auth import events, extensions, queries, sessions
from wharf_auth.limits import Limit, email_key, ip_key
from wharf_auth.schemas import LoginBody, RefreshBody, TokenPair
from wharf_common.authn import unauthorized
from wharf_common.db import get_session
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation
from wharf_common.problems import Problem
from wharf_common.revocation import Revocation
from wharf_common.tokens import MAX_LEEWAY_SECONDS
from wharf_common.validation import parse_body

bp = Blueprint("tokens", __name__)

LOGIN_FAILED = "Invalid email or password."
REFRESH_FAILED = "Invalid, expired or revoked refresh token."
NO_STORE = {"Cache-Control": "no-store"}


@bp.post("/login")
@operation(
    "Sign in: an access token and a refresh token",
    body=LoginBody,
    responses={
        200: Doc("Tokens", TokenPair, headers=("Cache-Control",)),
        401: "Wrong email or password",
        403: "The email address is not verified and ALLOW_UNVERIFIED_LOGIN is off",
        429: Doc("Too many failed attempts", problem=True, headers=("Retry-After",)),
    },
    tags=("tokens",),
)
def login() -> ResponseReturnValue:
    body = parse_body(LoginBody)
    config, found = sessions.settings(), extensions.of()
    email = body.email.lower()
    account_limit = Limit(email_key(email), config.login_max_failures)
    limits = [account_limit, Limit(ip_key(request.remote_addr or "unknown"), config.ip_max_failures)]
    wait = found.limiter.retry_after(limits)
    if wait is not None:
        events.emit("login_locked", email=email, level=logging.WARNING)
        raise Problem(
            429,
            "Too many failed sign-in attempts; try again later.",
            slug="too-many-requests",
            headers={"Retry-After": str(wait)},
        )
    session = get_session()
    account = queries.account_by_email(session, email=email)
    # An unknown email costs one password verification too (no timing difference).
    if not found.passwords.verify(account.password_hash if account else None, body.password) or account is None:
        found.limiter.record_failure(limits)
        events.emit("login_failure", email=email, level=logging.WARNING)
        raise unauthorized(LOGIN_FAILED)
    found.limiter.reset(account_limit)
    if account.email_verified_at is None and not config.allow_unverified_login:
        events.emit("login_unverified", account_id=account.id, level=logging.WARNING)
        raise Problem(
            403,
            "Confirm your email address first (POST /auth/verify-email/resend mails the link again).",
            slug="email-not-verified",
            title="Email address not verified",
        )
    if found.passwords.needs_rehash(account.password_hash):
        account.password_hash = found.passwords.hash(body.password)
        account.updated_at = sessions.now()
    tokens = sessions.issue_tokens(session, account, uuid.uuid4())
    session.commit()
    events.emit("login_success", account_id=account.id)
    return jsonify(tokens), 200, NO_STORE


@bp.post("/refresh")
@operation(
    "Trade a refresh token for new tokens (each refresh token works once)",
    body=RefreshBody,
    responses={200: Doc("Tokens", TokenPair, headers=("Cache-Control",)), 401: "Invalid, used or revoked"},
    tags=("tokens",),
)
def refresh() -> ResponseReturnValue:
    """Rotate a refresh token. Presenting one that was already used revokes its whole family."""
    token_hash = sessions.hash_token(parse_body(RefreshBody).refresh_token)
    session = get_session()
    claimed = queries.claim_refresh_token(session, token_hash=token_hash, now=sessions.now())
    if claimed is None:
        _revoke_family_if_reused(token_hash)
        raise unauthorized(REFRESH_FAILED)
    account_id, family_id = claimed
    account = queries.account_by_id(session, account_id=account_id)
    if account is None:
        session.rollback()
        raise unauthorized(REFRESH_FAILED)
    tokens = sessions.issue_tokens(session, account, family_id)
    session.commit()
    events.emit("refresh", account_id=account.id)
    return jsonify(tokens), 200, NO_STORE


def _revoke_family_if_reused(token_hash: str) -> None:
    """A used refresh token presented again was stolen or leaked: end its whole session, the
    access tokens of the family included, at every service."""
    session = get_session()
    existing = queries.refresh_token_by_hash(session, token_hash=token_hash)
    if existing is None or existing.used_at is None:
        session.rollback()
        return
    queries.revoke_refresh_tokens(session, now=sessions.now(), family_id=existing.family_id)
    family = Revocation("family", str(existing.family_id), sessions.covering_expiry())
    sessions.revoke(session, family)
    session.commit()
    sessions.announce(family)
    events.emit("refresh_reuse_detected", account_id=existing.account_id, level=logging.WARNING)


@bp.post("/logout")
@operation(
    "End the session of this access token",
    responses={204: Doc("Signed out")},
    tags=("tokens",),
    bearer=True,
)
def logout() -> ResponseReturnValue:
    """End the session: this access token, every token of its login family, its refresh tokens."""
    account, claims = sessions.current_account()
    session = get_session()
    ended = [Revocation("jti", claims["jti"], float(claims["exp"]) + MAX_LEEWAY_SECONDS)]
    family_id = _family_id(claims.get("fid"))
    if family_id is not None:
        ended.append(Revocation("family", str(family_id), sessions.covering_expiry()))
        queries.revoke_refresh_tokens(session, now=sessions.now(), family_id=family_id, account_id=account.id)
    sessions.revoke(session, *ended)
    queries.delete_expired_revocations(session)
    session.commit()
    sessions.announce(*ended)
    events.emit("logout", account_id=account.id)
    return "", 204


def _family_id(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
