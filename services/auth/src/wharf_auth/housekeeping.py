"""What the mail worker removes on RQ's maintenance schedule (at start, then every ten minutes):
account events past ACCOUNT_EVENTS_RETENTION_DAYS, refresh tokens long expired, and the records
of sessions that have no token left and are older than the sign-in alert window."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wharf_auth import queries
from wharf_auth.settings import AuthSettings

log = logging.getLogger(__name__)

# A used refresh token presented again is reuse (its session ends) until it is removed this long
# after its expiry; later it is only an unknown token (401).
KEEP_EXPIRED_REFRESH_TOKENS = timedelta(days=7)


def sweep(sessions: sessionmaker[Session], settings: AuthSettings, now: datetime | None = None) -> dict[str, int]:
    """Remove what has outlived its use; returns how many rows of each kind went."""
    now = now or datetime.now(UTC)
    with sessions() as session:
        removed = {
            "account_events": queries.delete_account_events_before(
                session, before=now - timedelta(days=settings.account_events_retention_days)
            ),
            "refresh_tokens": queries.delete_refresh_tokens_expired_before(
                session, before=now - KEEP_EXPIRED_REFRESH_TOKENS
            ),
            "sessions": queries.delete_sessions_forgotten_before(
                session, before=now - timedelta(days=settings.sign_in_alert_days)
            ),
        }
        session.commit()
    return removed


def sweep_logged(sessions: sessionmaker[Session], settings: AuthSettings) -> None:
    """:func:`sweep`, logged; a database error is logged and waits for the next round."""
    try:
        removed = sweep(sessions, settings)
    except SQLAlchemyError as exc:
        log.warning("housekeeping failed, next round in ten minutes: %s", type(exc).__name__)
        return
    log.info("housekeeping", extra={"event": "housekeeping", "removed": removed})
