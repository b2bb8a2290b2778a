"""The wiring every Wharf Flask app shares: proxy trust, request ids, errors, health, DB, Redis."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from wharf_common import db, extensions, health, metrics
from wharf_common.cache import make_redis
from wharf_common.logs import configure_logging
from wharf_common.problems import REQUEST_ID_PATTERN, LastResort, register_error_handlers
from wharf_common.settings import CommonSettings

REQUEST_ID_HEADER = "X-Request-ID"


QUIET_ROUTES = {"/healthz", "/readyz"}  # probed every few seconds: logged at DEBUG only
# nginx's access line already records every request (request id, status, latency). A service adds an
# INFO line where it knows more: a write (with the account), a failure, a slow answer. A successful
# read is a DEBUG line: at one line per request, logging was a fifth of a cached read's CPU time
# (bench/README.md, issue 18).
READS = {"GET", "HEAD", "OPTIONS"}
SLOW_SECONDS = 1.0
request_log = logging.getLogger("wharf.request")


def _assign_request_id() -> None:
    g.started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else uuid.uuid4().hex


def _without_content(response: Response) -> bool:
    return response.status_code == 204 or (
        request.method == "OPTIONS" and not response.is_streamed and response.calculate_content_length() == 0
    )


def _finish(response: Response) -> Response:
    """Drop the media type of an empty answer, echo the request id, then count and log the request
    (never its headers or body)."""
    if _without_content(response):
        # No body, so no media type: Flask's default (text/html) would describe content that is not there.
        response.headers.remove("Content-Type")
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    duration = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    method, status = request.method, response.status_code
    metrics.REQUEST_SECONDS.labels(method, route, str(status)).observe(duration)
    routine = route in QUIET_ROUTES or (method in READS and status < 400 and duration < SLOW_SECONDS)
    level = logging.DEBUG if routine else logging.INFO
    fields = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(duration * 1000, 2),
        "client_ip": request.remote_addr,
    }
    request_log.log(level, "%s %s %s", method, route, status, extra=fields)
    return response


def create_base_app(import_name: str, settings: CommonSettings) -> Flask:
    """A Flask app with the shared wiring; the service adds its own blueprints."""
    configure_logging(settings.service_name, settings.log_level)
    app = db.RetryingDispatch(import_name)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    # Exactly one trusted hop: nginx. Its X-Forwarded-For entry is the client address and
    # X-Forwarded-Prefix the public path prefix (/api, /auth) it strips.
    app.wsgi_app = LastResort(ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_prefix=1))  # type: ignore[method-assign]
    app.before_request(_assign_request_id)
    app.after_request(_finish)
    register_error_handlers(app)

    engine = db.make_engine(settings)
    extensions.init_app(app, extensions.Extensions(settings, engine, db.make_sessions(engine), make_redis(settings)))
    db.init_app(app)
    app.register_blueprint(health.bp)
    return app
