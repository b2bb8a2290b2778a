"""Account recovery: password reset and email verification, by links mailed to the address, and
the "this wasn't me" of a sign-in alert.

Asking for a mail (reset, or a verification again) answers 202 with the same body whether or not
an account has the address, after the same work: limits counted, one job queued. The mail worker
does the rest (:mod:`wharf_auth.mail`). Redeeming a token answers 400 with a problem document that
says why it was refused (invalid, used, superseded, expired).
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from wharf_auth import activity, events, extensions, mail, recovery, sessions
from wharf_auth import passwords as policy
from wharf_auth.limits import Limit, email_key, ip_key
from wharf_auth.schemas import (
    Accepted,
    EmailBody,
    PasswordResetBody,
    SignInAlertBody,
    SignInAlertResult,
    VerifyEmailBody,
)
from wharf_common import extensions as common
from wharf_common.db import get_session
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation
from wharf_common.problems import Problem, unavailable
from wharf_common.validation import invalid, parse_body

bp = Blueprint("recovery", __name__)

ACCEPTED = {
    "status": "accepted",
    "detail": "If an account has this address, a mail with a link is on its way.",
}
NO_STORE = {"Cache-Control": "no-store"}
REFUSED = "The token is invalid, used, superseded by a newer one, or expired (`type` says which)"
THROTTLED = Doc("Too many requests for this address or from this client", problem=True, headers=("Retry-After",))


@bp.post("/password-reset")
@operation(
    "Mail a password-reset link (the same answer whether or not the account exists)",
    body=EmailBody,
    responses={202: Doc("Accepted", Accepted, headers=("Cache-Control",)), 429: THROTTLED},
    tags=("recovery",),
)
def request_password_reset() -> ResponseReturnValue:
    return _request_mail(recovery.RESET)


@bp.post("/password-reset/confirm")
@operation(
    "Set a new password with a mailed token; every session of the account ends",
    body=PasswordResetBody,
    responses={204: Doc("Password set"), 400: REFUSED},
    tags=("recovery",),
)
def confirm_password_reset() -> ResponseReturnValue:
    body = parse_body(PasswordResetBody)
    session, now = get_session(), sessions.now()
    account = recovery.account_of(session, recovery.redeemable(session, body.token, recovery.RESET, now=now))
    reasons = policy.problems(body.new_password, email=account.email)
    if reasons:  # checked before the token is used up, so the owner can try another password
        raise invalid([{"field": "new_password", "message": f"Password {reason}."} for reason in reasons])
    recovery.claim(session, body.token, recovery.RESET, now=now)
    everything_before = sessions.set_password(session, account, extensions.of().passwords.hash(body.new_password))
    if account.email_verified_at is None:
        account.email_verified_at = now  # the link reached the owner of the address
    activity.record(session, account.id, activity.PASSWORD_RESET)
    session.commit()
    sessions.announce(everything_before)
    events.emit("password_reset", account_id=account.id)
    return "", 204


@bp.post("/verify-email")
@operation(
    "Confirm the account's email address with a mailed token",
    body=VerifyEmailBody,
    responses={204: Doc("Verified"), 400: REFUSED},
    tags=("recovery",),
)
def verify_email() -> ResponseReturnValue:
    body = parse_body(VerifyEmailBody)
    session, now = get_session(), sessions.now()
    account = recovery.account_of(session, recovery.redeemable(session, body.token, recovery.VERIFY, now=now))
    recovery.claim(session, body.token, recovery.VERIFY, now=now)
    if account.email_verified_at is None:
        account.email_verified_at = now
    session.commit()
    events.emit("email_verified", account_id=account.id)
    return "", 204


@bp.post("/sign-in-alert")
@operation(
    '"This wasn\'t me": end the session a sign-in alert was about, and mail a password-reset link',
    body=SignInAlertBody,
    responses={200: Doc("Ended", SignInAlertResult, headers=("Cache-Control",)), 400: REFUSED},
    tags=("recovery",),
)
def report_sign_in() -> ResponseReturnValue:
    """The token of a sign-in alert's link: the session it names ends at every service, and the
    account's owner is mailed a password-reset link (unless the mail queue is down: the answer says)."""
    body = parse_body(SignInAlertBody)
    session, now = get_session(), sessions.now()
    token = recovery.redeemable(session, body.token, recovery.ALERT, now=now)
    account = recovery.account_of(session, token)
    recovery.claim(session, body.token, recovery.ALERT, now=now)
    ended = []
    if token.family_id is not None and sessions.live_families(session, account.id, token.family_id):
        ended = sessions.end(session, account.id, [token.family_id], activity.SESSION_REPORTED)
    else:  # over already: the report is recorded all the same
        activity.record(session, account.id, activity.SESSION_REPORTED, session_id=token.family_id)
    session.commit()
    sessions.announce(*ended)
    events.emit("sign_in_reported", account_id=account.id, level=logging.WARNING)
    try:
        mail.enqueue(common.of().redis, recovery.RESET, account.email)
        mailed = True
    except (redis.RedisError, OSError):
        mailed = False
    return jsonify(session_ended=True, password_reset_mailed=mailed), 200, NO_STORE


@bp.post("/verify-email/resend")
@operation(
    "Mail the verification link again (the same answer whether or not the account exists)",
    body=EmailBody,
    responses={202: Doc("Accepted", Accepted, headers=("Cache-Control",)), 429: THROTTLED},
    tags=("recovery",),
)
def resend_verification() -> ResponseReturnValue:
    return _request_mail(recovery.VERIFY)


def _request_mail(purpose: str) -> ResponseReturnValue:
    """The same steps for any address: count the request against its limits, queue the job."""
    email = parse_body(EmailBody).email
    config = sessions.settings()
    limiter = extensions.of().recovery_limiter
    limits = [
        Limit(f"{purpose}:{email_key(email)}", config.recovery_max_requests),
        Limit(ip_key(request.remote_addr or "unknown"), config.recovery_ip_max_requests),
    ]
    wait = limiter.retry_after(limits)
    if wait is not None:
        events.emit(f"{purpose}_mail_throttled", email=email, level=logging.WARNING)
        raise Problem(
            429,
            "Too many requests for a mail; try again later.",
            slug="too-many-requests",
            headers={"Retry-After": str(wait)},
        )
    limiter.record_failure(limits)  # every request counts, not only failed ones
    try:
        mail.enqueue(common.of().redis, purpose, email)
    except (redis.RedisError, OSError):
        raise unavailable("The mail queue is unavailable; retry later.", dependency="redis") from None
    events.emit(f"{purpose}_mail_requested", email=email)
    return jsonify(ACCEPTED), 202, NO_STORE


def queue_verification(email: str) -> None:
    """After registration: queue the verification mail. A Redis outage must not undo the account,
    so a failure is logged and the owner asks again (``/verify-email/resend``)."""
    try:
        mail.enqueue(common.of().redis, recovery.VERIFY, email)
    except (redis.RedisError, OSError) as exc:
        logging.getLogger(__name__).warning("verification mail not queued: %s", type(exc).__name__)
