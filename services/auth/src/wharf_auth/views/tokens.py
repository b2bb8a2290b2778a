"""Sign-in sessions: login, refresh, logout."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Row
from sqlalchemy.orm import Session

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
        raise unauthorized(LOGIN_FAILED, token_sent=False)
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


REFRESH_DESCRIPTION = """Each refresh token is used once: the answer carries a new access token and a new
refresh token of the same session, and the old refresh token is used up.

**Retrying is safe for a few seconds.** The same refresh token presented again within the reuse
interval (`REFRESH_REUSE_INTERVAL_SECONDS`, 5 s by default) after its first use answers 200 with
the same pair as the first time (`expires_in` counts down), so a client that lost the answer to
a timeout can simply send the request again.

**Reuse after that ends the session.** A used refresh token presented after the interval is
taken as stolen: the answer is 401, and every token of that sign-in (the access tokens and the
refresh token that replaced it included) is revoked at every service. Other sessions of the
account go on."""


@bp.post("/refresh")
@operation(
    "Trade a refresh token for new tokens",
    description=REFRESH_DESCRIPTION,
    body=RefreshBody,
    responses={
        200: Doc(
            "Tokens (the same ones again for a retry within the reuse interval)", TokenPair, headers=("Cache-Control",)
        ),
        401: "Unknown, expired or revoked refresh token, or one used before the reuse interval (its session is ended)",
    },
    tags=("tokens",),
)
def refresh() -> ResponseReturnValue:
    """Rotate a refresh token: see REFRESH_DESCRIPTION."""
    presented = parse_body(RefreshBody).refresh_token
    config, session, now = sessions.settings(), get_session(), sessions.now()
    row = queries.refresh_token_for_update(session, token_hash=sessions.hash_token(presented))
    if row is None or row.revoked_at is not None:
        session.rollback()
        raise unauthorized(REFRESH_FAILED, token_sent=False)
    if row.used_at is not None:
        within = (now - row.used_at).total_seconds() <= config.refresh_reuse_interval_seconds
        again = sessions.open_successor(presented, row.successor) if within and row.successor else None
        if again is None:
            _end_family(session, row)
            raise unauthorized(REFRESH_FAILED, token_sent=False)
        session.rollback()
        events.emit("refresh_retried", account_id=row.account_id)
        return jsonify(again), 200, NO_STORE
    if row.expires_at <= now or row.account_found is None:
        session.rollback()
        raise unauthorized(REFRESH_FAILED, token_sent=False)
    tokens, successor = sessions.sign_pair(row.account_id, row.roles, row.email_verified_at is not None, row.family_id)
    interval = timedelta(seconds=config.refresh_reuse_interval_seconds)
    queries.rotate_refresh_token(
        session,
        used=row,
        now=now,
        sealed=sessions.seal_successor(presented, tokens) if interval else None,
        new_token_hash=successor.token_hash,
        new_expires_at=successor.expires_at,
        used_before=now - interval,
    )
    session.commit()
    events.emit("refresh", account_id=row.account_id)
    return jsonify(tokens), 200, NO_STORE


def _end_family(session: Session, reused: Row[Any]) -> None:
    """A used refresh token presented again after the reuse interval was stolen or leaked: end its
    whole session, the access tokens of the family included, at every service."""
    queries.revoke_refresh_tokens(session, now=sessions.now(), family_id=reused.family_id)
    family = Revocation("family", str(reused.family_id), sessions.covering_expiry())
    sessions.revoke(session, family)
    session.commit()
    sessions.announce(family)
    events.emit("refresh_reuse_detected", account_id=reused.account_id, level=logging.WARNING)


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
