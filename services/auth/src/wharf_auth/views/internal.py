"""Routes for the other services on the backend network only: nginx never routes ``/internal/``
(deploy/nginx), and a request that came through it (``X-Forwarded-For``) is refused here too."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from wharf_auth import queries
from wharf_common.db import get_session

bp = Blueprint("internal", __name__, url_prefix="/internal")


@bp.before_request
def _backend_only() -> None:
    if "X-Forwarded-For" in request.headers:
        abort(404)


@bp.get("/revocations")
def revocations() -> ResponseReturnValue:
    """Every revocation whose tokens have not all expired: the list other services re-sync from."""
    current = queries.current_revocations(get_session())
    return jsonify(revocations=[revocation.to_json() for revocation in current]), 200, {"Cache-Control": "no-store"}
