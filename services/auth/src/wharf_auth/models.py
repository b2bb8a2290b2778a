"""Tables of the ``auth`` schema (SQLAlchemy 2.0 typed mappings)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ARRAY, BigInteger, DateTime, ForeignKey, LargeBinary, MetaData, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "auth"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320))  # unique on lower(email), see migration 0001
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)), server_default="{user}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Access tokens issued (iat) before this instant are rejected by the auth service (migration 0002).
    tokens_valid_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the owner proved the address is theirs (a verification or password-reset link; migration 0004).
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RefreshToken(Base):
    """One opaque refresh token, stored only as its SHA-256; a login starts a family, refreshes extend it."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID]
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The pair that replaced this token, encrypted under a key derived from this token (see
    # wharf_auth.sessions.seal_successor); kept only during the reuse interval (migration 0005).
    successor: Mapped[bytes | None] = mapped_column(LargeBinary)
    # How the session's sign-in was made (the access tokens' ``amr`` claim), carried from token to
    # token; NULL for tokens issued before migration 0006 (password only).
    amr: Mapped[list[str] | None] = mapped_column(ARRAY(String(16)))


class Revocation(Base):
    """A revoked token (``jti``), login session (``family``) or account (tokens ``issued_before``),
    kept until every token it covers has expired; see :mod:`wharf_common.revocation`."""

    __tablename__ = "revocations"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AccountToken(Base):
    """A single-use token mailed to an account's address (``purpose``: ``reset`` or ``verify``),
    stored only as its SHA-256. Issuing one supersedes the account's earlier ones of that purpose."""

    __tablename__ = "account_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The session a sign-in alert's "this wasn't me" link ends (purpose ``alert``; migration 0006).
    family_id: Mapped[uuid.UUID | None]


class LoginSession(Base):
    """A sign-in (a refresh-token family, ``family_id``) as its owner sees it: when and from which
    client and network it started. Written once, at sign-in (migration 0006)."""

    __tablename__ = "sessions"

    family_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    client: Mapped[str] = mapped_column(String(100))  # a coarse description of the User-Agent
    network: Mapped[str] = mapped_column(String(64))  # the client address's prefix, never the address


class TotpFactor(Base):
    """An account's TOTP second factor: pending until confirmed with a code. The secret is stored
    encrypted (wharf_auth.mfa); ``last_step`` is the time step of the last code accepted (no replay)."""

    __tablename__ = "totp_factors"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_step: Mapped[int | None] = mapped_column(BigInteger)


class RecoveryCode(Base):
    """A single-use recovery code of the second factor, stored only as its SHA-256."""

    __tablename__ = "recovery_codes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AccountEvent(Base):
    """Something that happened to an account's security, as its owner may see it (GET /auth/events):
    no secret, no full address. Removed after ACCOUNT_EVENTS_RETENTION_DAYS by the mail worker."""

    __tablename__ = "account_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    client: Mapped[str | None] = mapped_column(String(100))
    network: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[uuid.UUID | None]
