"""Account events: what happened to an account's security, kept in auth's schema for its owner to
see (``GET /auth/events``): the type, when, and the client's coarse description and network prefix
(:mod:`wharf_auth.clients`), never a secret or a full address. The mail worker removes events
older than ``ACCOUNT_EVENTS_RETENTION_DAYS``."""

from __future__ import annotations

import uuid

from flask import has_request_context
from sqlalchemy.orm import Session

from wharf_auth import clients, queries

SIGN_IN = "sign_in"
SIGN_IN_FAILED = "sign_in_failed"  # a wrong password
SECOND_FACTOR_FAILED = "second_factor_failed"  # a wrong TOTP or recovery code
RECOVERY_CODE_USED = "recovery_code_used"
SIGN_IN_REFUSED = "sign_in_refused"  # an admin without a second factor while REQUIRE_ADMIN_MFA is on
PASSWORD_CHANGED = "password_changed"  # noqa: S105 - an event type, not a password
PASSWORD_RESET = "password_reset"  # noqa: S105 - an event type, not a password
MFA_ENABLED = "mfa_enabled"
MFA_DISABLED = "mfa_disabled"
SIGNED_OUT = "signed_out"
SESSION_ENDED = "session_ended"  # ended from another session (DELETE /auth/sessions...)
SESSION_REPORTED = "session_reported"  # "this wasn't me" in a sign-in alert
ACCOUNT_LOCKED = "account_locked"
TYPES = (
    SIGN_IN,
    SIGN_IN_FAILED,
    SECOND_FACTOR_FAILED,
    RECOVERY_CODE_USED,
    SIGN_IN_REFUSED,
    PASSWORD_CHANGED,
    PASSWORD_RESET,
    MFA_ENABLED,
    MFA_DISABLED,
    SIGNED_OUT,
    SESSION_ENDED,
    SESSION_REPORTED,
    ACCOUNT_LOCKED,
)


def record(session: Session, account_id: uuid.UUID, kind: str, *, session_id: uuid.UUID | None = None) -> None:
    """Add an event to the caller's transaction; in a request, with the calling client."""
    client = clients.of_request() if has_request_context() else None
    queries.add_account_event(
        session,
        account_id=account_id,
        kind=kind,
        client=client.description if client else None,
        network=client.network if client else None,
        session_id=session_id,
    )
