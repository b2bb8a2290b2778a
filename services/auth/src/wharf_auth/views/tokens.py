"""Sign-in sessions: login (and its second factor, views/mfa.py), refresh, logout."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Connection, Row

from wharf_auth import activity, events, extensions, queries, recovery, sessions, signin
from wharf_auth.schemas import LoginBody, LoginResult, RefreshBody, TokenPair
from wharf_common.authn import unauthorized
from wharf_common.db import get_session, write_connection
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


LOGIN_DESCRIPTION = """Answers 200 with a token pair, or, for an account with a second factor, 200
with `{"mfa_required": true, "mfa_token": ..., "expires_in": 300}`: send a code from the
authenticator app (or a recovery code) with that token to `POST /auth/login/mfa` within five
minutes. The token works once and for nothing else.

A wrong password, an unknown address: the same 401, after the same work. Failures are counted per
account and per client address (wrong second-factor codes too); the failure that reaches the
account's limit locks it for a while (429) and mails its owner once. A sign-in from a client and
network the account has not seen lately mails the owner an alert (`SIGN_IN_ALERT_DAYS`)."""


@bp.post("/login")
@operation(
    "Sign in: an access token and a refresh token, or a second-factor challenge",
    description=LOGIN_DESCRIPTION,
    body=LoginBody,
    responses={
        200: Doc("Tokens, or the challenge of the second factor", LoginResult, headers=("Cache-Control",)),
        401: "Wrong email or password",
        403: "The email address is not verified and ALLOW_UNVERIFIED_LOGIN is off, or an admin without a "
        "second factor while REQUIRE_ADMIN_MFA is on (`type` says which)",
        429: Doc("Too many failed attempts", problem=True, headers=("Retry-After",)),
    },
    tags=("tokens",),
)
def login() -> ResponseReturnValue:
    body = parse_body(LoginBody)
    config, found = sessions.settings(), extensions.of()
    email = body.email.lower()
    limits = signin.limits_for(email)
    signin.refuse_if_throttled(limits, email)
    session = get_session()
    account = queries.account_by_email(session, email=email)
    # An unknown email costs one password verification too (no timing difference).
    if not found.passwords.verify(account.password_hash if account else None, body.password) or account is None:
        events.emit("login_failure", email=email, level=logging.WARNING)
        signin.count_failure(session, limits, email, account, activity.SIGN_IN_FAILED)
        raise unauthorized(LOGIN_FAILED, token_sent=False)
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
    if queries.has_confirmed_factor(session, account_id=account.id):
        token = recovery.issue(
            session, account, recovery.MFA, now=sessions.now(), ttl_seconds=recovery.MFA_CHALLENGE_SECONDS
        )
        session.commit()
        events.emit("login_second_factor_asked", account_id=account.id)
        challenge = {"mfa_required": True, "mfa_token": token, "expires_in": recovery.MFA_CHALLENGE_SECONDS}
        return jsonify(challenge), 200, NO_STORE
    signin.refuse_without_second_factor(session, account, sessions.PASSWORD_ONLY)
    return signin.complete(session, account, limits, sessions.PASSWORD_ONLY)


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
    # A Core connection's transaction: the rotation's statements need no ORM unit of work.
    config, connection, now = sessions.settings(), write_connection(), sessions.now()
    row = queries.refresh_token_for_update(connection, token_hash=sessions.hash_token(presented))
    if row is None or row.revoked_at is not None:
        connection.rollback()
        raise unauthorized(REFRESH_FAILED, token_sent=False)
    if row.used_at is not None:
        within = (now - row.used_at).total_seconds() <= config.refresh_reuse_interval_seconds
        again = sessions.open_successor(presented, row.successor) if within and row.successor else None
        if again is None:
            _end_family(connection, row)
            raise unauthorized(REFRESH_FAILED, token_sent=False)
        connection.rollback()
        events.emit("refresh_retried", account_id=row.account_id)
        return jsonify(again), 200, NO_STORE
    if row.expires_at <= now or row.account_found is None:
        connection.rollback()
        raise unauthorized(REFRESH_FAILED, token_sent=False)
    amr = row.amr or sessions.PASSWORD_ONLY
    if sessions.second_factor_missing(row, amr):  # REQUIRE_ADMIN_MFA turned on since this sign-in
        connection.rollback()
        raise unauthorized(REFRESH_FAILED, token_sent=False)
    verified = row.email_verified_at is not None
    tokens, successor = sessions.sign_pair(row.account_id, row.roles, verified, row.family_id, amr)
    interval = timedelta(seconds=config.refresh_reuse_interval_seconds)
    queries.rotate_refresh_token(
        connection,
        used=row,
        now=now,
        sealed=sessions.seal_successor(presented, tokens) if interval else None,
        new_token_hash=successor.token_hash,
        new_expires_at=successor.expires_at,
        amr=amr,
        used_before=now - interval,
    )
    connection.commit()
    events.emit("refresh", account_id=row.account_id)
    return jsonify(tokens), 200, NO_STORE


def _end_family(connection: Connection, reused: Row[Any]) -> None:
    """A used refresh token presented again after the reuse interval was stolen or leaked: end its
    whole session, the access tokens of the family included, at every service."""
    queries.revoke_refresh_tokens(connection, now=sessions.now(), family_id=reused.family_id)
    family = Revocation("family", str(reused.family_id), sessions.covering_expiry())
    sessions.revoke(connection, family)
    connection.commit()
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
    sessions.revoke(session, *ended)
    family_id = signin.family_of(claims)
    if family_id is not None:
        ended += sessions.end(session, account.id, [family_id], activity.SIGNED_OUT)
    queries.delete_expired_revocations(session)
    session.commit()
    sessions.announce(*ended)
    events.emit("logout", account_id=account.id)
    return "", 204
