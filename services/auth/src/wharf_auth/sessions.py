"""Sign-in sessions: issuing token pairs, ending sessions, and the account behind a request's token.

A login starts a *family* (the ``fid`` claim): every access and refresh token of that login and
its refreshes. Ending a session records revocations in auth's database in the caller's
transaction, then announces them on Redis to every other service once committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import g
from sqlalchemy import Connection, Row
from sqlalchemy.orm import Session

from wharf_auth import activity, clients, extensions, queries
from wharf_auth.models import Account
from wharf_auth.settings import AuthSettings
from wharf_common import authn
from wharf_common import extensions as common
from wharf_common.authn import ADMIN_ROLE
from wharf_common.revocation import Revocation, publish
from wharf_common.tokens import MAX_LEEWAY_SECONDS

PASSWORD_ONLY = ["pwd"]  # the access tokens' amr claim (RFC 8176)
OTP = "otp"
WITH_SECOND_FACTOR = ["pwd", OTP]


def settings() -> AuthSettings:
    return common.of().settings  # type: ignore[return-value]


def now() -> datetime:
    return datetime.now(UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_tokens(session: Session, account: Account, family_id: uuid.UUID, amr: list[str]) -> dict[str, Any]:
    """A new access token and a new refresh token in ``family_id``, signed in by ``amr``; the caller commits."""
    tokens, refresh = sign_pair(account.id, account.roles, account.email_verified_at is not None, family_id, amr)
    queries.add_refresh_token(
        session,
        account_id=account.id,
        family_id=family_id,
        token_hash=refresh.token_hash,
        expires_at=refresh.expires_at,
        amr=amr,
    )
    return tokens


@dataclass(frozen=True)
class NewRefreshToken:
    """What auth stores of a refresh token it hands out: its hash, never the token."""

    token_hash: str
    expires_at: datetime


def sign_pair(
    account_id: uuid.UUID, roles: list[str] | None, email_verified: bool, family_id: uuid.UUID, amr: list[str]
) -> tuple[dict[str, Any], NewRefreshToken]:
    """A new access token for the account and a new refresh token in ``family_id``, signed in by
    ``amr``: the answer's pair, and the refresh token as the caller stores it."""
    config = settings()
    access, _claims = extensions.of().keyring.sign_access_token(
        issuer=config.token_issuer,
        audience=config.token_audience,
        subject=str(account_id),
        roles=list(roles or []),
        email_verified=email_verified,
        family_id=str(family_id),
        ttl=config.access_token_ttl_seconds,
        amr=amr,
    )
    refresh = secrets.token_urlsafe(32)
    tokens = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": config.access_token_ttl_seconds,
        "refresh_token": refresh,
    }
    return tokens, NewRefreshToken(hash_token(refresh), now() + timedelta(seconds=config.refresh_token_ttl_seconds))


@dataclass(frozen=True)
class SignIn:
    tokens: dict[str, Any]
    family_id: uuid.UUID
    new_client: bool  # its client and network have not signed in to the account lately: alert the owner


def start(session: Session, account: Account, amr: list[str]) -> SignIn:
    """A new session of ``account`` (signed in by ``amr``) from the calling client: its record, its
    first token pair, a ``sign_in`` event. The caller commits."""
    client = clients.of_request()
    family_id = uuid.uuid4()
    new_client = _is_new_client(session, account.id, client)
    queries.add_login_session(
        session, family_id=family_id, account_id=account.id, client=client.description, network=client.network
    )
    tokens = issue_tokens(session, account, family_id, amr)
    activity.record(session, account.id, activity.SIGN_IN, session_id=family_id)
    return SignIn(tokens, family_id, new_client)


def _is_new_client(session: Session, account_id: uuid.UUID, client: clients.Client) -> bool:
    """No session of the account from this client and network started or was refreshed within
    SIGN_IN_ALERT_DAYS. An account's first sign-in ever is not news to its owner."""
    days = settings().sign_in_alert_days
    if days == 0 or not queries.has_signed_in_before(session, account_id=account_id):
        return False
    since = now() - timedelta(days=days)
    return not queries.client_seen_since(
        session, account_id=account_id, client=client.description, network=client.network, since=since
    )


def second_factor_missing(account: Account | Row[Any], amr: list[str]) -> bool:
    """REQUIRE_ADMIN_MFA is on, the account is an admin, and ``amr`` has no second factor."""
    return settings().require_admin_mfa and ADMIN_ROLE in (account.roles or []) and OTP not in amr


def end(session: Session, account_id: uuid.UUID, family_ids: list[uuid.UUID], kind: str) -> list[Revocation]:
    """End the account's sessions ``family_ids`` in the caller's transaction: their refresh tokens
    revoked, their access tokens listed as revoked, one ``kind`` event each. :func:`announce` the
    returned revocations once committed."""
    ended = []
    for family_id in family_ids:
        queries.revoke_refresh_tokens(session, now=now(), family_id=family_id, account_id=account_id)
        ended.append(Revocation("family", str(family_id), covering_expiry()))
        activity.record(session, account_id, kind, session_id=family_id)
    revoke(session, *ended)
    return ended


def live_families(session: Session, account_id: uuid.UUID, family_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """The account's sessions (or ``family_id`` alone, if it is one of them) whose tokens may still
    work: a refresh token not revoked, issued recently enough for it or its access token to be valid."""
    config = settings()
    lifetime = max(config.refresh_token_ttl_seconds, config.access_token_ttl_seconds + MAX_LEEWAY_SECONDS)
    return queries.live_families(
        session, account_id=account_id, issued_since=now() - timedelta(seconds=lifetime), family_id=family_id
    )


def set_password(session: Session, account: Account, password_hash: str) -> Revocation:
    """Set the account's password and end every session of it, in the caller's transaction:
    :func:`announce` the returned revocation once committed."""
    changed_at = now()
    account.password_hash = password_hash
    account.updated_at = changed_at
    account.tokens_valid_after = changed_at
    queries.revoke_refresh_tokens(session, now=changed_at, account_id=account.id)
    everything_before = Revocation("account", str(account.id), covering_expiry(), changed_at.timestamp())
    revoke(session, everything_before)
    return everything_before


# -- the refresh reuse interval ---------------------------------------------------------------
# A used refresh token presented again within REFRESH_REUSE_INTERVAL_SECONDS gets the pair that
# replaced it (a client retrying a refresh whose answer it lost). That pair is stored on the used
# token's row, encrypted (AES-GCM) under a key derived (HKDF) from the used refresh token itself:
# auth keeps only that token's SHA-256, so neither the database nor a backup of it can open the
# pair; only whoever presents the used token again can, which is who would get it anyway.
_SUCCESSOR_INFO = b"wharf refresh-token successor v1"
_NONCE_BYTES = 12


def _successor_cipher(refresh_token: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SUCCESSOR_INFO).derive(refresh_token.encode())
    return AESGCM(key)


def seal_successor(refresh_token: str, tokens: dict[str, Any]) -> bytes:
    """``tokens`` (the pair that replaced ``refresh_token``), encrypted for ``refresh_token``'s holder."""
    document = {**tokens, "expires_at": now().timestamp() + tokens["expires_in"]}
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _successor_cipher(refresh_token).encrypt(nonce, json.dumps(document).encode(), None)


def open_successor(refresh_token: str, sealed: bytes) -> dict[str, Any] | None:
    """The pair :func:`seal_successor` sealed, its ``expires_in`` counted from now; None if it
    cannot be opened with this token."""
    try:
        document = json.loads(
            _successor_cipher(refresh_token).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], None)
        )
    except (InvalidTag, ValueError):
        return None
    expires_at = document.pop("expires_at")
    return {**document, "expires_in": max(0, int(expires_at - now().timestamp()))}


def covering_expiry() -> float:
    """When every access token issued until now has expired (TTL plus the verifiers' leeway)."""
    return now().timestamp() + settings().access_token_ttl_seconds + MAX_LEEWAY_SECONDS


def revoke(session: Session | Connection, *revocations: Revocation) -> None:
    """Record ``revocations`` in the session's transaction; :func:`announce` them after the commit."""
    for revocation in revocations:
        queries.record_revocation(session, revocation=revocation)


def announce(*revocations: Revocation) -> None:
    for revocation in revocations:
        publish(common.of().redis, revocation)


def current_account() -> tuple[Row[Any], dict[str, Any]]:
    """The account row behind the request's Bearer access token, read by the revocation check."""
    principal = authn.authenticator().authenticate()
    return g.signed_in_account, principal.claims


class DatabaseCheck:
    """:class:`wharf_common.authn.RevocationCheck` against auth's own database: a logout takes
    effect here at once."""

    def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        """Revoked unless the account exists and neither the token, its login nor its account is
        revoked; the account found is kept for :func:`current_account` (one query for both)."""
        try:
            account_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            return True
        g.signed_in_account = queries.signed_in_account(account_id=account_id, claims=claims)
        return g.signed_in_account is None
