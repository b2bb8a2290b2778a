"""Single-use tokens handed to an account's owner: mailed for password reset (``reset``), email
verification (``verify``) and a sign-in alert's "this wasn't me" (``alert``), and the challenge of
a sign-in that awaits its second factor (``mfa``).

A token is 256 random bits, handed out once and stored only as its SHA-256. It works once, until
it expires (``ACCOUNT_TOKEN_TTL_SECONDS`` for reset and verify, ``ALERT_TTL_SECONDS``,
``MFA_CHALLENGE_SECONDS``), and, except for alerts (one per new session), only while it is the
account's newest of its purpose. The mail worker and the sign-in issue tokens (:func:`issue`);
the views redeem them (:func:`redeemable`, then :func:`claim` in the transaction that acts on them).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from wharf_auth import queries
from wharf_auth.models import Account, AccountToken
from wharf_auth.sessions import hash_token
from wharf_common.problems import Problem

RESET = "reset"
VERIFY = "verify"
ALERT = "alert"
MFA = "mfa"
PURPOSES = (RESET, VERIFY, ALERT, MFA)
ALERT_TTL_SECONDS = 7 * 86_400  # a sign-in alert's link: a mail may be read days later
MFA_CHALLENGE_SECONDS = 300  # between the password and the second factor
# Expired tokens are kept this long, so that reusing one is still answered as expired, not unknown.
KEEP_EXPIRED = timedelta(days=1)


def issue(
    session: Session,
    account: Account,
    purpose: str,
    *,
    now: datetime,
    ttl_seconds: int,
    family_id: uuid.UUID | None = None,
) -> str:
    """A new token of ``purpose`` for ``account`` (except for alerts, the earlier ones stop working;
    an alert names the session it ends, ``family_id``); the caller commits."""
    queries.lock_account(session, account=account)  # two issues at once still leave one newest token
    token = secrets.token_urlsafe(32)
    queries.add_account_token(
        session,
        account_id=account.id,
        purpose=purpose,
        token_hash=hash_token(token),
        now=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
        supersede=purpose != ALERT,
        family_id=family_id,
    )
    queries.delete_account_tokens_expired_before(session, before=now - KEEP_EXPIRED)
    return token


def _refused(slug: str, title: str, detail: str) -> Problem:
    return Problem(400, detail, slug=slug, title=title)


def redeemable(session: Session, token: str, purpose: str, *, now: datetime) -> AccountToken:
    """The stored token, if it may be used now; otherwise a 400 problem that says why."""
    found = queries.account_token(session, token_hash=hash_token(token), purpose=purpose)
    if found is None:
        raise _refused("token-invalid", "Invalid token", "The token is not valid.")
    if found.used_at is not None:
        raise _refused("token-used", "Used token", "The token has already been used.")
    if found.superseded_at is not None:
        raise _refused("token-superseded", "Superseded token", "A newer link was sent; use the newest one.")
    if found.expires_at <= now:
        raise _refused("token-expired", "Expired token", "The token has expired; ask for a new link.")
    return found


def account_of(session: Session, token: AccountToken) -> Account:
    account = queries.account_by_id(session, account_id=token.account_id)
    if account is None:  # deleted since (its tokens go with it; this covers the race)
        raise _refused("token-invalid", "Invalid token", "The token is not valid.")
    return account


def claim(session: Session, token: str, purpose: str, *, now: datetime) -> None:
    """Mark the token used in the caller's transaction (a concurrent claim of the same token loses)."""
    if queries.claim_account_token(session, token_hash=hash_token(token), purpose=purpose, now=now) is None:
        raise _refused("token-used", "Used token", "The token has already been used.")


def claim_challenge(session: Session, token: str, *, now: datetime) -> bool:
    """Use up a sign-in challenge (``mfa``) in the caller's transaction; False if another use won."""
    return queries.claim_account_token(session, token_hash=hash_token(token), purpose=MFA, now=now) is not None
