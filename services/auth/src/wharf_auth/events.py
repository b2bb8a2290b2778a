"""Security events on the ``wharf.auth.events`` logger. Never a password or a token."""

from __future__ import annotations

import hashlib
import logging

from flask import has_request_context, request

from wharf_common.metrics import AUTH_EVENTS

log = logging.getLogger("wharf.auth.events")


def email_hash(email: str) -> str:
    return hashlib.sha256(email.encode("utf-8")).hexdigest()


def emit(event: str, *, account_id: object = None, email: str | None = None, level: int = logging.INFO) -> None:
    extra: dict[str, object] = {"event": event}
    if account_id is not None:
        extra["account_id"] = str(account_id)
    if email is not None:
        extra["email_hash"] = email_hash(email)
    if has_request_context():
        extra["client_ip"] = request.remote_addr
    log.log(level, event, extra=extra)
    AUTH_EVENTS.labels(event).inc()
