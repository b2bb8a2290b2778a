"""The caller's own sessions (each sign-in's refresh-token family) and account events."""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from wharf_auth import activity, clients, events, queries, sessions, signin
from wharf_auth.models import AccountEvent
from wharf_auth.schemas import EventPage, SessionList
from wharf_common import pages
from wharf_common.db import get_session
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation
from wharf_common.problems import Problem

bp = Blueprint("sessions", __name__)

NO_STORE = signin.NO_STORE
MAX_SESSIONS_LISTED = 100
ENDED = """Its refresh token stops working at once; its access tokens stop working at auth at once and
at every other service within the revocation sync bound (pushed at once; re-synced every 5 s)."""


@bp.get("/sessions")
@operation(
    "The caller's active sessions, most recently used first (at most 100)",
    description="A session is one sign-in and its refreshes. `client` is a coarse description of the "
    "User-Agent, `network` the address's prefix (/24 or /48); `current` marks the calling token's.",
    responses={200: Doc("The sessions", SessionList, headers=("Cache-Control",))},
    tags=("sessions",),
    bearer=True,
)
def list_sessions() -> ResponseReturnValue:
    account, claims = sessions.current_account()
    current = signin.family_of(claims)
    rows = queries.active_sessions(get_session(), account_id=account.id, now=sessions.now(), limit=MAX_SESSIONS_LISTED)
    items = [
        {
            "id": str(row.family_id),
            "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat(),
            "client": row.client or clients.UNKNOWN_CLIENT,
            "network": row.network or clients.UNKNOWN_NETWORK,
            "current": row.family_id == current,
        }
        for row in rows
    ]
    return jsonify(items=items), 200, NO_STORE


@bp.delete("/sessions/<uuid:session_id>")
@operation(
    "End one of the caller's sessions",
    description=ENDED,
    responses={204: Doc("Ended"), 404: "No active session of the caller has this id"},
    tags=("sessions",),
    bearer=True,
)
def end_session(session_id: uuid.UUID) -> ResponseReturnValue:
    account, _claims = sessions.current_account()
    session = get_session()
    if not sessions.live_families(session, account.id, session_id):
        raise Problem(404, "No active session of yours has this id.", slug="not-found")
    _end(account.id, [session_id])
    return "", 204


@bp.delete("/sessions")
@operation(
    "End every session of the caller but the current one",
    description=ENDED,
    responses={204: Doc("Ended")},
    tags=("sessions",),
    bearer=True,
)
def end_other_sessions() -> ResponseReturnValue:
    account, claims = sessions.current_account()
    current = signin.family_of(claims)
    others = [f for f in sessions.live_families(get_session(), account.id) if f != current]
    _end(account.id, others)
    return "", 204


def _end(account_id: uuid.UUID, family_ids: list[uuid.UUID]) -> None:
    session = get_session()
    ended = sessions.end(session, account_id, family_ids, activity.SESSION_ENDED)
    session.commit()
    sessions.announce(*ended)
    events.emit("sessions_ended", account_id=account_id)


@bp.get("/events")
@operation(
    "The caller's account events, newest first, in pages",
    description="Sign-ins (and failures), password changes and resets, second-factor changes, ended "
    f"sessions and locks, kept for ACCOUNT_EVENTS_RETENTION_DAYS. Types: {', '.join(activity.TYPES)}.",
    parameters=pages.LIST_PARAMETERS,
    responses={200: Doc("A page of events", EventPage, headers=("Cache-Control",)), 422: "Bad limit or cursor"},
    tags=("sessions",),
    bearer=True,
)
def list_events() -> ResponseReturnValue:
    account, _claims = sessions.current_account()
    page = pages.page_request()
    rows = queries.account_events_page(get_session(), account_id=account.id, after=page.after, limit=page.limit + 1)
    items = [_event_json(row) for row in rows[: page.limit]]
    next_cursor = pages.next_cursor([row.id for row in rows], page.limit)
    return jsonify(items=items, next_cursor=next_cursor), 200, NO_STORE


def _event_json(event: AccountEvent) -> dict[str, object]:
    return {
        "type": event.type,
        "at": event.at.isoformat(),
        "client": event.client,
        "network": event.network,
        "session_id": str(event.session_id) if event.session_id else None,
    }
