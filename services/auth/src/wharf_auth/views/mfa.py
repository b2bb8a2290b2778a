"""The second factor (TOTP): enrolment, confirmation with recovery codes, removal, and the second
step of a sign-in (see :mod:`wharf_auth.mfa` for the codes, :mod:`wharf_auth.signin` for limits)."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from wharf_auth import activity, events, extensions, mfa, queries, recovery, sessions, signin
from wharf_auth.schemas import (
    MfaLoginBody,
    MfaLoginWithCode,
    MfaLoginWithRecoveryCode,
    RecoveryCodes,
    TokenPair,
    TotpConfirmBody,
    TotpEnrolment,
    TotpRemoveBody,
    TotpRemoveWithCode,
    TotpRemoveWithRecoveryCode,
)
from wharf_common.authn import unauthorized
from wharf_common.db import get_session
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation
from wharf_common.problems import Problem
from wharf_common.validation import invalid_field, json_object, parse_body, validate

bp = Blueprint("mfa", __name__)
M = TypeVar("M", bound=BaseModel)

NO_STORE = signin.NO_STORE
CHALLENGE_FAILED = "Invalid, used or expired sign-in challenge; sign in again."
THROTTLED = Doc("Too many failed attempts for this account or from this client", problem=True, headers=("Retry-After",))


def _one_of(with_code: type[M], with_recovery_code: type[M]) -> M:
    """The body with either ``code`` or ``recovery_code`` (never both, never neither: 422 naming
    ``code``), as the model for that choice."""
    data = json_object()
    if ("code" in data) == ("recovery_code" in data):
        raise invalid_field("code", "send either code (from the authenticator app) or recovery_code, not both")
    return validate(with_code if "code" in data else with_recovery_code, data)


def _codes(body: Any) -> dict[str, str | None]:
    return {"code": getattr(body, "code", None), "recovery_code": getattr(body, "recovery_code", None)}


@bp.post("/login/mfa")
@operation(
    "Complete a sign-in with the second factor: a code from the authenticator app, or a recovery code",
    description="The `mfa_token` of `POST /auth/login` works once, for five minutes. A code is accepted "
    "once per 30-second step; a recovery code once. Wrong codes count against the account's sign-in "
    "limit, as wrong passwords do.",
    body=MfaLoginBody,
    responses={
        200: Doc("Tokens (amr: pwd, otp)", TokenPair, headers=("Cache-Control",)),
        401: "Invalid, used or expired challenge, or a wrong code",
        429: THROTTLED,
    },
    tags=("tokens",),
)
def login_with_second_factor() -> ResponseReturnValue:
    body = _one_of(MfaLoginWithCode, MfaLoginWithRecoveryCode)
    session = get_session()
    account = signin.challenge_account(session, body.mfa_token)
    if account is None:
        raise unauthorized(CHALLENGE_FAILED, token_sent=False)
    factor = queries.totp_factor(session, account_id=account.id, for_update=True)

    def right() -> bool:
        active = factor is not None and factor.confirmed_at is not None
        return active and signin.verify_second_factor(session, account, factor, **_codes(body)) is not None

    wrong = unauthorized("The code is wrong, or was used already.", token_sent=False)
    limits = signin.attempt_second_factor(session, account, right, wrong)
    if not recovery.claim_challenge(session, body.mfa_token, now=sessions.now()):  # a concurrent use won
        session.rollback()
        raise unauthorized(CHALLENGE_FAILED, token_sent=False)
    return signin.complete(session, account, limits, sessions.WITH_SECOND_FACTOR)


@bp.post("/mfa/totp")
@operation(
    "Start enrolling a TOTP second factor: its secret, otpauth URI and QR code",
    description="Shown once. The factor is active only once `POST /auth/mfa/totp/confirm` has a code "
    "from it; starting again replaces a pending one.",
    responses={
        200: Doc("The new secret, as text, URI and SVG QR code", TotpEnrolment, headers=("Cache-Control",)),
        409: "A second factor is already active (remove it first)",
    },
    tags=("mfa",),
    bearer=True,
)
def start_enrolment() -> ResponseReturnValue:
    signed_in, _claims = sessions.current_account()
    session = get_session()
    factor = queries.totp_factor(session, account_id=signed_in.id, for_update=True)
    if factor is not None and factor.confirmed_at is not None:
        raise Problem(409, "A second factor is already active; remove it first.", slug="mfa-already-enabled")
    secret = mfa.new_secret()
    queries.put_pending_factor(session, account_id=signed_in.id, secret=extensions.of().mfa_secrets.seal(secret))
    session.commit()
    uri = mfa.provisioning_uri(secret, signed_in.email)
    return jsonify(secret=secret, otpauth_uri=uri, qr_svg=mfa.qr_svg(uri)), 200, NO_STORE


@bp.post("/mfa/totp/confirm")
@operation(
    "Activate the pending TOTP factor with a code from it: ten single-use recovery codes, shown once",
    body=TotpConfirmBody,
    responses={
        200: Doc("The recovery codes", RecoveryCodes, headers=("Cache-Control",)),
        403: "The code is wrong",
        409: "No enrolment is pending",
        429: THROTTLED,
    },
    tags=("mfa",),
    bearer=True,
)
def confirm_enrolment() -> ResponseReturnValue:
    signed_in, _claims = sessions.current_account()
    body = parse_body(TotpConfirmBody)
    session = get_session()
    account = queries.account_by_id(session, account_id=signed_in.id)
    factor = queries.totp_factor(session, account_id=signed_in.id, for_update=True)
    if account is None or factor is None or factor.confirmed_at is not None:
        raise Problem(409, "No enrolment is pending: start one with POST /auth/mfa/totp.", slug="mfa-not-pending")
    signin.attempt_second_factor(
        session,
        account,
        lambda: signin.verify_second_factor(session, account, factor, code=body.code, recovery_code=None) is not None,
        Problem(403, "The code is wrong.", slug="wrong-code"),
    )
    factor.confirmed_at = sessions.now()
    codes = mfa.new_recovery_codes()
    queries.replace_recovery_codes(
        session, account_id=account.id, code_hashes=[mfa.recovery_code_hash(c) for c in codes]
    )
    activity.record(session, account.id, activity.MFA_ENABLED)
    session.commit()
    events.emit("mfa_enabled", account_id=account.id)
    return jsonify(recovery_codes=codes), 200, NO_STORE


@bp.delete("/mfa/totp")
@operation(
    "Remove the second factor: the password and a code (or a recovery code)",
    body=TotpRemoveBody,
    responses={
        204: Doc("Removed"),
        403: "The password or the code is wrong",
        409: "No second factor is active, or the account is an admin and REQUIRE_ADMIN_MFA is on",
        429: THROTTLED,
    },
    tags=("mfa",),
    bearer=True,
)
def remove_factor() -> ResponseReturnValue:
    signed_in, _claims = sessions.current_account()
    body = _one_of(TotpRemoveWithCode, TotpRemoveWithRecoveryCode)
    session = get_session()
    account = queries.account_by_id(session, account_id=signed_in.id)
    factor = queries.totp_factor(session, account_id=signed_in.id, for_update=True)
    if account is None or factor is None or factor.confirmed_at is None:
        raise Problem(409, "No second factor is active.", slug="mfa-not-enabled")
    if sessions.second_factor_missing(account, sessions.PASSWORD_ONLY):
        raise Problem(409, "Admins keep their second factor while REQUIRE_ADMIN_MFA is on.", slug="mfa-required")

    def both_right() -> bool:  # both checked, whatever the first says
        password_right = extensions.of().passwords.verify(account.password_hash, body.password)
        return signin.verify_second_factor(session, account, factor, **_codes(body)) is not None and password_right

    wrong = Problem(403, "The password or the code is wrong.", slug="wrong-credentials")
    signin.attempt_second_factor(session, account, both_right, wrong)
    queries.remove_factor(session, account_id=account.id)
    activity.record(session, account.id, activity.MFA_DISABLED)
    session.commit()
    events.emit("mfa_disabled", account_id=account.id)
    return "", 204
