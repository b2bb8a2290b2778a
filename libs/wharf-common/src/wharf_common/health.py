"""``/healthz`` (the process answers) and ``/readyz`` (Postgres and Redis answer)."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from wharf_common import extensions
from wharf_common.db import ping
from wharf_common.problems import RETRY_AFTER_SECONDS, Problem

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


def _failing_dependencies() -> list[str]:
    failing = []
    try:
        ping(extensions.of().engine)
    except SQLAlchemyError as exc:
        log.warning("readiness: postgres unreachable: %s", type(exc).__name__)
        failing.append("postgres")
    try:
        extensions.of().redis.ping()
    except redis.RedisError as exc:
        log.warning("readiness: redis unreachable: %s", type(exc).__name__)
        failing.append("redis")
    return failing


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: the process is up and serving."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Readiness: Postgres and Redis both answer."""
    failing = _failing_dependencies()
    if failing:
        raise Problem(
            503,
            f"Not ready: {', '.join(failing)} unreachable.",
            slug="not-ready",
            title="Service Unavailable",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
            failing=failing,
        )
    return jsonify(status="ready", checks={"postgres": "ok", "redis": "ok"})
