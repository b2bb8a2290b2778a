"""Every SQL statement of the auth service, as keyword-only functions on the request's session
(the caller commits)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Row, Select, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from wharf_auth.models import Account, AccountToken, RefreshToken
from wharf_auth.models import Revocation as RevocationRow
from wharf_common.db import autocommit_read
from wharf_common.revocation import Revocation

# -- accounts -----------------------------------------------------------------------------------


def account_by_email(session: Session, *, email: str) -> Account | None:
    return session.scalars(select(Account).where(func.lower(Account.email) == email.lower())).one_or_none()


def lock_account(session: Session, *, account: Account) -> None:
    """Hold the account's row until the transaction ends (serialises issuing its mailed tokens)."""
    session.execute(select(Account.id).where(Account.id == account.id).with_for_update())


# -- refresh tokens -----------------------------------------------------------------------------


def add_refresh_token(
    session: Session, *, account_id: uuid.UUID, family_id: uuid.UUID, token_hash: str, expires_at: datetime
) -> None:
    session.add(
        RefreshToken(
            id=uuid.uuid4(), account_id=account_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
        )
    )


@functools.cache
def _refresh_token_for_update() -> Select[Any]:
    tokens, accounts = RefreshToken.__table__, Account.__table__
    account = [accounts.c.roles, accounts.c.email_verified_at, accounts.c.id.label("account_found")]
    return (
        select(*tokens.c, *account)
        .outerjoin(accounts, accounts.c.id == tokens.c.account_id)
        .where(tokens.c.token_hash == bindparam("token_hash"))
        .with_for_update(of=tokens)
    )


def refresh_token_for_update(session: Session, *, token_hash: str) -> Row[Any] | None:
    """The refresh token with this hash and what a new access token says of its account (``roles``,
    ``email_verified_at``; ``account_found`` None if the account is gone), in one statement. The
    token's row is locked until the transaction ends: concurrent presentations of one token (two
    replicas, two threads) are answered one after the other, and the later one sees what the first did."""
    return session.execute(_refresh_token_for_update(), {"token_hash": token_hash}).one_or_none()


@functools.cache
def _rotate_refresh_token() -> Select[Any]:
    tokens = RefreshToken.__table__
    used = (
        update(tokens)
        .where(tokens.c.id == bindparam("used_id"))
        .values(used_at=bindparam("now"), successor=bindparam("sealed"))
        .returning(tokens.c.id)
        .cte("used")
    )
    fresh = (
        insert(tokens)
        .values(
            id=bindparam("new_id"),
            account_id=bindparam("new_account_id"),
            family_id=bindparam("family"),
            token_hash=bindparam("new_token_hash"),
            expires_at=bindparam("new_expires_at"),
        )
        .returning(tokens.c.id)
        .cte("fresh")
    )
    return select(fresh.c.id).add_cte(used, _forget_successors(tokens).cte("forgotten"))


def _forget_successors(tokens: Any) -> Any:
    """Erase the sealed successor pairs of the family's tokens used before ``used_before`` (their
    reuse interval is over: presenting them again now ends the session). Rows another request
    holds are skipped (a later refresh erases them): waiting for them could deadlock with a reuse
    that is revoking this family."""
    expired = (
        select(tokens.c.id)
        .where(
            tokens.c.family_id == bindparam("family"),
            tokens.c.successor.is_not(None),
            tokens.c.used_at < bindparam("used_before"),
        )
        .with_for_update(skip_locked=True)
    )
    return update(tokens).where(tokens.c.id.in_(expired)).values(successor=None).returning(tokens.c.id)


def rotate_refresh_token(
    session: Session,
    *,
    used: Row[Any],
    now: datetime,
    sealed: bytes | None,
    new_token_hash: str,
    new_expires_at: datetime,
    used_before: datetime,
) -> None:
    """In one statement: the ``used`` (locked) refresh token marked used at ``now`` with its sealed
    successor pair, its successor added to the family, and the family's successor pairs used before
    ``used_before`` erased. The caller commits. (No parameter is named after a column: SQLAlchemy
    would take it for a value of every INSERT and UPDATE in the statement.)"""
    parameters = {
        "used_id": used.id,
        "now": now,
        "sealed": sealed,
        "new_id": uuid.uuid4(),
        "new_account_id": used.account_id,
        "family": used.family_id,
        "new_token_hash": new_token_hash,
        "new_expires_at": new_expires_at,
        "used_before": used_before,
    }
    session.execute(_rotate_refresh_token(), parameters).one()


def revoke_refresh_tokens(
    session: Session, *, now: datetime, family_id: uuid.UUID | None = None, account_id: uuid.UUID | None = None
) -> None:
    """Revoke the unrevoked refresh tokens of a family, of an account, or of the account's family
    (and erase their sealed successor pairs)."""
    conditions = [RefreshToken.revoked_at.is_(None)]
    if family_id is not None:
        conditions.append(RefreshToken.family_id == family_id)
    if account_id is not None:
        conditions.append(RefreshToken.account_id == account_id)
    session.execute(update(RefreshToken).where(*conditions).values(revoked_at=now, successor=None))


# -- mailed tokens (password reset, email verification) -----------------------------------------


def add_account_token(
    session: Session, *, account_id: uuid.UUID, purpose: str, token_hash: str, now: datetime, expires_at: datetime
) -> None:
    """A new token of ``purpose`` for the account; its earlier unused ones of that purpose stop working."""
    session.execute(
        update(AccountToken)
        .where(
            AccountToken.account_id == account_id,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.superseded_at.is_(None),
        )
        .values(superseded_at=now)
    )
    session.add(
        AccountToken(
            id=uuid.uuid4(), account_id=account_id, purpose=purpose, token_hash=token_hash, expires_at=expires_at
        )
    )


def account_token(session: Session, *, token_hash: str, purpose: str) -> AccountToken | None:
    return session.scalars(
        select(AccountToken).where(AccountToken.token_hash == token_hash, AccountToken.purpose == purpose)
    ).one_or_none()


def claim_account_token(session: Session, *, token_hash: str, purpose: str, now: datetime) -> uuid.UUID | None:
    """The account id of the usable token with this hash, now marked used; None if there is none.
    Of two concurrent claims of one token only one UPDATE matches."""
    return session.execute(
        update(AccountToken)
        .where(
            AccountToken.token_hash == token_hash,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.superseded_at.is_(None),
            AccountToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(AccountToken.account_id)
    ).scalar_one_or_none()


def delete_account_tokens_expired_before(session: Session, *, before: datetime) -> None:
    """Housekeeping: tokens long expired (kept a while so that reuse is still told apart from a typo)."""
    session.execute(delete(AccountToken).where(AccountToken.expires_at < before))


# -- revocations of access tokens ---------------------------------------------------------------


def record_revocation(session: Session, *, revocation: Revocation) -> None:
    """Add ``revocation`` (or extend the one it repeats) to the session's transaction."""
    expires_at = datetime.fromtimestamp(revocation.expires_at, UTC)
    issued_before = None if revocation.issued_before is None else datetime.fromtimestamp(revocation.issued_before, UTC)
    statement = insert(RevocationRow).values(
        kind=revocation.kind, value=revocation.value, issued_before=issued_before, expires_at=expires_at
    )
    excluded = statement.excluded
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["kind", "value"],
            set_={
                "expires_at": func.greatest(RevocationRow.expires_at, excluded.expires_at),
                "issued_before": func.greatest(RevocationRow.issued_before, excluded.issued_before),
            },
        )
    )


@functools.cache
def _signed_in_account() -> Select[Any]:
    accounts, revocations = Account.__table__, RevocationRow.__table__
    issued_at = func.to_timestamp(bindparam("iat", type_=Float))
    revoked = (
        select(revocations.c.kind)
        .where(
            revocations.c.expires_at > func.now(),
            or_(
                and_(revocations.c.kind == "jti", revocations.c.value == bindparam("jti")),
                and_(revocations.c.kind == "family", revocations.c.value == bindparam("fid")),
                and_(
                    revocations.c.kind == "account",
                    revocations.c.value == bindparam("sub"),
                    issued_at < revocations.c.issued_before,
                ),
            ),
        )
        .exists()
    )
    return select(accounts).where(
        accounts.c.id == bindparam("account_id"),
        or_(accounts.c.tokens_valid_after.is_(None), issued_at >= accounts.c.tokens_valid_after),
        ~revoked,
    )


def signed_in_account(*, account_id: uuid.UUID, claims: Mapping[str, Any]) -> Row[Any] | None:
    """The account row of ``account_id`` (the token's ``sub``), or None when the token is revoked:
    its ``jti``, its login family or its account revoked, or issued before the account's
    ``tokens_valid_after`` (password change). One statement, built once, on the autocommit
    connection: the account and its revocations in a single round trip."""
    family = claims.get("fid")
    parameters = {
        "account_id": account_id,
        "sub": str(claims["sub"]),
        "jti": str(claims["jti"]),
        "fid": family if isinstance(family, str) else None,
        "iat": float(claims["iat"]),
    }
    return autocommit_read(lambda connection: connection.execute(_signed_in_account(), parameters).one_or_none())


def account_by_id(session: Session, *, account_id: uuid.UUID) -> Account | None:
    return session.get(Account, account_id)


def current_revocations(session: Session) -> list[Revocation]:
    """Every revocation whose tokens have not all expired yet."""
    rows = session.execute(
        select(RevocationRow.kind, RevocationRow.value, RevocationRow.expires_at, RevocationRow.issued_before).where(
            RevocationRow.expires_at > func.now()
        )
    ).all()
    return [
        Revocation(kind, value, expires_at.timestamp(), None if before is None else before.timestamp())
        for kind, value, expires_at, before in rows
    ]


def delete_expired_revocations(session: Session) -> None:
    """Housekeeping: revocations of tokens that have expired anyway."""
    session.execute(delete(RevocationRow).where(RevocationRow.expires_at < func.now() - timedelta(minutes=1)))
