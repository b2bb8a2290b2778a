"""Every SQL statement of the auth service, as keyword-only functions on the request's session
(the caller commits)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Float, Row, Select, and_, bindparam, delete, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from wharf_auth.models import Account, AccountEvent, AccountToken, LoginSession, RecoveryCode, RefreshToken, TotpFactor
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
    session: Session,
    *,
    account_id: uuid.UUID,
    family_id: uuid.UUID,
    token_hash: str,
    expires_at: datetime,
    amr: list[str],
) -> None:
    session.add(
        RefreshToken(
            id=uuid.uuid4(),
            account_id=account_id,
            family_id=family_id,
            token_hash=token_hash,
            expires_at=expires_at,
            amr=amr,
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


def refresh_token_for_update(session: Session | Connection, *, token_hash: str) -> Row[Any] | None:
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
            amr=bindparam("new_amr"),
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
    session: Session | Connection,
    *,
    used: Row[Any],
    now: datetime,
    sealed: bytes | None,
    new_token_hash: str,
    new_expires_at: datetime,
    amr: list[str],
    used_before: datetime,
) -> None:
    """In one statement: the ``used`` (locked) refresh token marked used at ``now`` with its sealed
    successor pair, its successor added to the family (signed in by ``amr``, as the session's first
    token was: the session's sign-in methods carry over), and the family's successor pairs used before
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
        "new_amr": amr,
        "used_before": used_before,
    }
    session.execute(_rotate_refresh_token(), parameters).one()


def revoke_refresh_tokens(
    session: Session | Connection,
    *,
    now: datetime,
    family_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
) -> None:
    """Revoke the unrevoked refresh tokens of a family, of an account, or of the account's family
    (and erase their sealed successor pairs)."""
    conditions = [RefreshToken.revoked_at.is_(None)]
    if family_id is not None:
        conditions.append(RefreshToken.family_id == family_id)
    if account_id is not None:
        conditions.append(RefreshToken.account_id == account_id)
    session.execute(update(RefreshToken).where(*conditions).values(revoked_at=now, successor=None))


def delete_refresh_tokens_expired_before(session: Session, *, before: datetime) -> int:
    """Housekeeping: refresh tokens long expired (kept a while so that a replay is still recognised)."""
    return session.execute(delete(RefreshToken).where(RefreshToken.expires_at < before)).rowcount


# -- sessions (refresh-token families) as their owner sees them ---------------------------------


def add_login_session(
    session: Session, *, family_id: uuid.UUID, account_id: uuid.UUID, client: str, network: str
) -> None:
    session.add(LoginSession(family_id=family_id, account_id=account_id, client=client, network=network))


def client_seen_since(session: Session, *, account_id: uuid.UUID, client: str, network: str, since: datetime) -> bool:
    """Whether a session of the account from this client and network started or was refreshed
    since ``since``."""
    refreshed = (
        select(RefreshToken.id)
        .where(RefreshToken.family_id == LoginSession.family_id, RefreshToken.created_at >= since)
        .exists()
    )
    return session.execute(
        select(
            select(LoginSession.family_id)
            .where(
                LoginSession.account_id == account_id,
                LoginSession.client == client,
                LoginSession.network == network,
                or_(LoginSession.created_at >= since, refreshed),
            )
            .exists()
        )
    ).scalar_one()


def has_signed_in_before(session: Session, *, account_id: uuid.UUID) -> bool:
    return session.execute(
        select(select(LoginSession.family_id).where(LoginSession.account_id == account_id).exists())
    ).scalar_one()


def active_sessions(session: Session, *, account_id: uuid.UUID, now: datetime, limit: int) -> list[Row[Any]]:
    """The account's sessions that can still be refreshed, most recently used first: each one's
    current refresh token (unused, unrevoked, unexpired) with the session's record, if it has one
    (sessions that started before migration 0006 have none)."""
    return list(
        session.execute(
            select(
                RefreshToken.family_id,
                func.coalesce(LoginSession.created_at, RefreshToken.created_at).label("created_at"),
                RefreshToken.created_at.label("last_used_at"),
                LoginSession.client,
                LoginSession.network,
            )
            .outerjoin(LoginSession, LoginSession.family_id == RefreshToken.family_id)
            .where(
                RefreshToken.account_id == account_id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .order_by(RefreshToken.created_at.desc(), RefreshToken.family_id)
            .limit(limit)
        ).all()
    )


def live_families(
    session: Session, *, account_id: uuid.UUID, issued_since: datetime, family_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """The account's families (all, or ``family_id`` alone) with an unrevoked refresh token issued
    since ``issued_since``: the sessions whose tokens may still work."""
    conditions = [
        RefreshToken.account_id == account_id,
        RefreshToken.revoked_at.is_(None),
        RefreshToken.created_at >= issued_since,
    ]
    if family_id is not None:
        conditions.append(RefreshToken.family_id == family_id)
    return list(session.scalars(select(RefreshToken.family_id).where(*conditions).distinct()))


def login_session(session: Session, *, family_id: uuid.UUID) -> LoginSession | None:
    return session.get(LoginSession, family_id)


def delete_sessions_forgotten_before(session: Session, *, before: datetime) -> int:
    """Housekeeping: records of sessions that started before ``before`` and have no refresh token left."""
    remaining = select(RefreshToken.id).where(RefreshToken.family_id == LoginSession.family_id).exists()
    return session.execute(delete(LoginSession).where(LoginSession.created_at < before, ~remaining)).rowcount


# -- the second factor ----------------------------------------------------------------------------


def totp_factor(session: Session, *, account_id: uuid.UUID, for_update: bool = False) -> TotpFactor | None:
    statement = select(TotpFactor).where(TotpFactor.account_id == account_id)
    return session.scalars(statement.with_for_update() if for_update else statement).one_or_none()


def has_confirmed_factor(session: Session, *, account_id: uuid.UUID) -> bool:
    confirmed = select(TotpFactor.account_id).where(
        TotpFactor.account_id == account_id, TotpFactor.confirmed_at.is_not(None)
    )
    return session.execute(select(confirmed.exists())).scalar_one()


def put_pending_factor(session: Session, *, account_id: uuid.UUID, secret: bytes) -> None:
    """A new pending (unconfirmed) factor for the account, replacing a pending one."""
    statement = insert(TotpFactor).values(account_id=account_id, secret=secret)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["account_id"],
            set_={"secret": secret, "created_at": func.now(), "last_step": None},
            where=TotpFactor.confirmed_at.is_(None),
        )
    )


def claim_step(session: Session, *, account_id: uuid.UUID, step: int) -> bool:
    """Record ``step`` as the last accepted one, unless a code of this step or a later one was
    accepted already (a replay): of two concurrent uses of one code only one UPDATE matches."""
    claimed = session.execute(
        update(TotpFactor)
        .where(
            TotpFactor.account_id == account_id,
            or_(TotpFactor.last_step.is_(None), TotpFactor.last_step < step),
        )
        .values(last_step=step)
        .returning(TotpFactor.account_id)
    ).scalar_one_or_none()
    return claimed is not None


def remove_factor(session: Session, *, account_id: uuid.UUID) -> None:
    session.execute(delete(TotpFactor).where(TotpFactor.account_id == account_id))
    session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))


def replace_recovery_codes(session: Session, *, account_id: uuid.UUID, code_hashes: list[str]) -> None:
    session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))
    session.add_all(RecoveryCode(id=uuid.uuid4(), account_id=account_id, code_hash=h) for h in code_hashes)


def claim_recovery_code(session: Session, *, account_id: uuid.UUID, code_hash: str, now: datetime) -> bool:
    """Mark the account's unused code with this hash used; False if there is none (or it was used)."""
    claimed = session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.account_id == account_id,
            RecoveryCode.code_hash == code_hash,
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .returning(RecoveryCode.id)
    ).scalar_one_or_none()
    return claimed is not None


# -- account events -------------------------------------------------------------------------------


def add_account_event(
    session: Session,
    *,
    account_id: uuid.UUID,
    kind: str,
    client: str | None,
    network: str | None,
    session_id: uuid.UUID | None,
) -> None:
    session.add(
        AccountEvent(
            id=uuid.uuid4(),
            account_id=account_id,
            type=kind,
            client=client,
            network=network,
            session_id=session_id,
        )
    )


def account_events_page(
    session: Session, *, account_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[AccountEvent]:
    """Up to ``limit`` of the account's events, newest first, after the event ``after`` (a cursor):
    keyset on (at, id). A cursor that is not one of the account's events gives an empty page."""
    statement = select(AccountEvent).where(AccountEvent.account_id == account_id)
    if after is not None:
        previous = (
            select(AccountEvent.at, AccountEvent.id)
            .where(AccountEvent.id == after, AccountEvent.account_id == account_id)
            .subquery()
        )
        statement = statement.where(
            tuple_(AccountEvent.at, AccountEvent.id) < select(previous.c.at, previous.c.id).scalar_subquery()
        )
    return list(session.scalars(statement.order_by(AccountEvent.at.desc(), AccountEvent.id.desc()).limit(limit)))


def recent_event(session: Session, *, account_id: uuid.UUID, kind: str, since: datetime) -> bool:
    return session.execute(
        select(
            select(AccountEvent.id)
            .where(AccountEvent.account_id == account_id, AccountEvent.type == kind, AccountEvent.at >= since)
            .exists()
        )
    ).scalar_one()


def delete_account_events_before(session: Session, *, before: datetime) -> int:
    """Housekeeping: events past their retention."""
    return session.execute(delete(AccountEvent).where(AccountEvent.at < before)).rowcount


# -- mailed tokens (password reset, email verification, sign-in alerts) and sign-in challenges ---


def add_account_token(
    session: Session,
    *,
    account_id: uuid.UUID,
    purpose: str,
    token_hash: str,
    now: datetime,
    expires_at: datetime,
    supersede: bool = True,
    family_id: uuid.UUID | None = None,
) -> None:
    """A new token of ``purpose`` for the account; with ``supersede``, its earlier unused ones of
    that purpose stop working."""
    if supersede:
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
            id=uuid.uuid4(),
            account_id=account_id,
            purpose=purpose,
            token_hash=token_hash,
            expires_at=expires_at,
            family_id=family_id,
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


def record_revocation(session: Session | Connection, *, revocation: Revocation) -> None:
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
