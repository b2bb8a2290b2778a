"""What every step of a sign-in shares (the password, then the second factor if the account has
one) and what a signed-in owner's second-factor changes share: the same per-account and
per-address limits, failures counted the same way (the failure that locks an account queues the
lock notice), and the completion that starts the session.

The account's failure count is reset only when a sign-in completes: a right password does not
wipe the count of wrong codes that followed an earlier right password.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from flask import Response, jsonify, request
from sqlalchemy.orm import Session

from wharf_auth import activity, events, extensions, mail, mfa, queries, recovery, sessions
from wharf_auth.limits import Limit, email_key, ip_key
from wharf_auth.models import Account, TotpFactor
from wharf_common import extensions as common
from wharf_common.problems import Problem

log = logging.getLogger(__name__)
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Limits:
    account: Limit
    every: list[Limit]  # the account's and the client address's


def limits_for(email: str) -> Limits:
    config = sessions.settings()
    account = Limit(email_key(email.lower()), config.login_max_failures)
    return Limits(account, [account, Limit(ip_key(request.remote_addr or "unknown"), config.ip_max_failures)])


def refuse_if_throttled(limits: Limits, email: str) -> None:
    """429 while the account or the client address has used up its failures."""
    wait = extensions.of().limiter.retry_after(limits.every)
    if wait is not None:
        events.emit("login_locked", email=email, level=logging.WARNING)
        raise Problem(
            429,
            "Too many failed sign-in attempts; try again later.",
            slug="too-many-requests",
            headers={"Retry-After": str(wait)},
        )


def count_failure(session: Session, limits: Limits, email: str, account: Account | None, kind: str) -> None:
    """Count a failed attempt (a wrong password or code) and record it for the account's owner, if
    the account exists. The failure that fills the account's limit locks it: the owner is mailed
    (the job is queued whether or not the account exists, so both cost the same here)."""
    filled = extensions.of().limiter.record_failure(limits.every)
    locked = limits.account in filled
    if account is not None:
        activity.record(session, account.id, kind)
        if locked:
            activity.record(session, account.id, activity.ACCOUNT_LOCKED)
        session.commit()
    if locked:
        events.emit("account_locked", email=email, level=logging.WARNING)
        _queue_quietly(lambda connection: mail.enqueue(connection, mail.LOCKED, email), "lock notice")


def attempt_second_factor(session: Session, account: Account, check: Callable[[], bool], refusal: Problem) -> Limits:
    """A second-factor attempt under the sign-in limits: 429 while they are used up; when ``check()``
    fails, what it changed is rolled back, the failure counted and ``refusal`` raised."""
    limits = limits_for(account.email)
    refuse_if_throttled(limits, account.email)
    if not check():
        session.rollback()
        events.emit("second_factor_failure", account_id=account.id, level=logging.WARNING)
        count_failure(session, limits, account.email, account, activity.SECOND_FACTOR_FAILED)
        raise refusal
    return limits


def verify_second_factor(
    session: Session, account: Account, factor: TotpFactor, *, code: str | None, recovery_code: str | None
) -> str | None:
    """Which kind of second factor was right (``otp`` or ``recovery_code``), or None. A TOTP code
    is used up for its time step; a recovery code for good. The secret is moved to the first
    encryption key on the way (rotation)."""
    now = sessions.now()
    secrets_box = extensions.of().mfa_secrets
    if code is not None:
        step = mfa.matching_step(_open(secrets_box, factor, account), code, now)
        if step is None or not queries.claim_step(session, account_id=account.id, step=step):
            return None
        factor.secret = secrets_box.reseal(factor.secret)
        return "otp"
    assert recovery_code is not None
    hashed = mfa.recovery_code_hash(recovery_code)
    if not queries.claim_recovery_code(session, account_id=account.id, code_hash=hashed, now=now):
        return None
    activity.record(session, account.id, activity.RECOVERY_CODE_USED)
    return "recovery_code"


def _open(secrets_box: mfa.SecretBox, factor: TotpFactor, account: Account) -> str:
    """The factor's secret; a 500 that says what to do when no configured key opens it (the key
    file lost the line it was stored under: recovery codes, stored as hashes, still work)."""
    try:
        return secrets_box.open(factor.secret)
    except mfa.UnreadableSecret:
        log.error("second-factor secret of account %s unreadable: no MFA_ENCRYPTION_KEY line opens it", account.id)
        raise Problem(
            500,
            "This account's authenticator codes cannot be checked: the server no longer has the key "
            "they were stored under. Use a recovery code, then remove the factor and enrol again.",
            slug="second-factor-unreadable",
            title="Second factor unreadable",
        ) from None


def refuse_without_second_factor(session: Session, account: Account, amr: list[str]) -> None:
    """403 for an admin signing in without a second factor while REQUIRE_ADMIN_MFA is on."""
    if sessions.second_factor_missing(account, amr):
        activity.record(session, account.id, activity.SIGN_IN_REFUSED)
        session.commit()
        events.emit("login_refused_without_second_factor", account_id=account.id, level=logging.WARNING)
        raise Problem(
            403,
            "Accounts with the admin role sign in only with a second factor (REQUIRE_ADMIN_MFA), and this "
            "account has none: an operator removes the role, you sign in, enrol one (POST /auth/mfa/totp), "
            "and the role is granted again.",
            slug="second-factor-required",
            title="Second factor required",
        )


def complete(session: Session, account: Account, limits: Limits, amr: list[str]) -> tuple[Response, int, Any]:
    """Start the session (its record, tokens and ``sign_in`` event), commit, reset the account's
    failure count, and queue a sign-in alert when the client is new to the account."""
    signed_in = sessions.start(session, account, amr)
    session.commit()
    extensions.of().limiter.reset(limits.account)
    if signed_in.new_client:
        family_id = signed_in.family_id
        _queue_quietly(lambda connection: mail.enqueue_sign_in_alert(connection, family_id), "sign-in alert")
    events.emit("login_success", account_id=account.id)
    return jsonify(signed_in.tokens), 200, NO_STORE


def _queue_quietly(enqueue: Any, what: str) -> None:
    """Queue a notice mail; a Redis outage must not fail the request that prompted it (logged)."""
    try:
        enqueue(common.of().redis)
    except (redis.RedisError, OSError) as exc:
        log.warning("%s not queued: %s", what, type(exc).__name__)


def challenge_account(session: Session, token: str) -> Account | None:
    """The account of a usable sign-in challenge (``mfa_token``), or None."""
    row = queries.account_token(session, token_hash=sessions.hash_token(token), purpose=recovery.MFA)
    now = sessions.now()
    if row is None or row.used_at is not None or row.superseded_at is not None or row.expires_at <= now:
        return None
    return queries.account_by_id(session, account_id=row.account_id)


def family_of(claims: dict[str, Any]) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(claims.get("fid")))
    except ValueError:
        return None
