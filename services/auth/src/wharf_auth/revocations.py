"""Recording revocations (durably first, then pushed to every service) and checking them in auth.

The auth service checks its own routes against Postgres directly: it loads the account anyway,
and a logout must take effect at auth at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from wharf_auth.models import Revocation as Row
from wharf_common.db import get_session
from wharf_common.revocation import Revocation, publish


def record(session: Session, revocation: Revocation) -> None:
    """Add ``revocation`` to the session's transaction; call :func:`announce` after the commit."""
    expires_at = datetime.fromtimestamp(revocation.expires_at, UTC)
    issued_before = None if revocation.issued_before is None else datetime.fromtimestamp(revocation.issued_before, UTC)
    statement = insert(Row).values(
        kind=revocation.kind, value=revocation.value, issued_before=issued_before, expires_at=expires_at
    )
    excluded = statement.excluded
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["kind", "value"],
            set_={
                "expires_at": func.greatest(Row.expires_at, excluded.expires_at),
                "issued_before": func.greatest(Row.issued_before, excluded.issued_before),
            },
        )
    )


def announce(*revocations: Revocation) -> None:
    for revocation in revocations:
        publish(current_app.extensions["wharf.redis"], revocation)


def is_revoked(session: Session, claims: Mapping[str, Any]) -> bool:
    keys = [("jti", str(claims["jti"])), ("account", str(claims["sub"]))]
    if isinstance(claims.get("fid"), str):
        keys.append(("family", claims["fid"]))
    rows = session.execute(
        select(Row.kind, Row.issued_before).where(tuple_(Row.kind, Row.value).in_(keys), Row.expires_at > func.now())
    ).all()
    issued_at = float(claims["iat"])
    return any(
        kind != "account" or (issued_before is not None and issued_at < issued_before.timestamp())
        for kind, issued_before in rows
    )


class DatabaseCheck:
    """:class:`wharf_common.authn.RevocationCheck` against Postgres, in the request's session."""

    def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        return is_revoked(get_session(), claims)


def delete_expired(session: Session) -> None:
    """Housekeeping: revocations of tokens that have expired anyway."""
    session.execute(delete(Row).where(Row.expires_at < func.now() - timedelta(minutes=1)))
