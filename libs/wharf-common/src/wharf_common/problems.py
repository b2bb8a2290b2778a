"""RFC 9457 problem details: the one error format of every Wharf response.

``type`` URIs are stable identifiers (``https://wharf.dev/problems/<slug>``); clients switch on them.
"""

from __future__ import annotations

import json as stdlib_json
import logging
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, json
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://wharf.dev/problems/"

log = logging.getLogger(__name__)

# Seconds a client is asked to wait when a dependency is unavailable (503).
RETRY_AFTER_SECONDS = "5"

# What an incoming X-Request-ID must look like to be kept (otherwise the service makes its own).
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{8,128}$")


def slug_for(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")


class Problem(Exception):
    """Raise to answer with a problem document. ``extra`` members are added to the body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or slug_for(status)
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra


def unavailable(detail: str, **extra: Any) -> Problem:
    """503 for a dependency that cannot answer right now, with ``Retry-After``."""
    return Problem(
        503,
        detail,
        slug="dependency-unavailable",
        title="Service Unavailable",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
        **extra,
    )


def problem_body(problem: Problem, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if request_id:
        body["request_id"] = request_id
    body.update(problem.extra)
    return body


def problem_response(problem: Problem) -> Response:
    body = problem_body(problem, g.get("request_id"))
    response = Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_MEDIA_TYPE)
    response.headers.update(problem.headers)
    return response


def _from_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    headers = {k: v for k, v in error.get_headers() if k.lower() in {"allow", "www-authenticate", "retry-after"}}
    detail = error.description or HTTPStatus(status).description
    return problem_response(Problem(status, detail, headers=headers))


def register_error_handlers(app: Flask) -> None:
    """Every error leaves the service as problem+json; nothing internal reaches the client."""

    @app.errorhandler(Problem)
    def _problem(error: Problem) -> Response:
        return problem_response(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        return _from_http_exception(error)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def _database_unavailable(error: Exception) -> Response:
        log.warning("database unavailable: %s", type(error).__name__)
        return problem_response(unavailable("The database is unavailable; retry later.", dependency="postgres"))

    @app.errorhandler(DBAPIError)
    def _database_error(error: DBAPIError) -> Response:
        if error.connection_invalidated:
            return _database_unavailable(error)
        log.exception("database error")
        return problem_response(Problem(500, "An unexpected error occurred."))

    @app.errorhandler(Exception)
    def _unexpected(_error: Exception) -> Response:
        log.exception("unhandled error")
        return problem_response(Problem(500, "An unexpected error occurred."))


class LastResort:
    """WSGI middleware: an exception that escapes Flask's own handling (a teardown callback, a
    middleware) still leaves as a problem+json 500, never as the WSGI server's bare HTML page.

    Flask calls ``start_response`` before its teardown runs, and a second call would not replace
    those headers in gunicorn (it appends), so the call is held back until the app has returned.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        held: list[Any] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            held[:] = [status, headers, exc_info]
            return _no_write

        try:
            chunks = self.app(environ, hold)
        except Exception:
            log.exception("unhandled error outside the request handlers")
            return _last_resort_answer(environ, start_response)
        start_response(*held)
        return chunks


def _no_write(_data: bytes) -> None:
    raise NotImplementedError("LastResort does not support the legacy write() callable")


def _last_resort_answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    headers = [("Content-Type", PROBLEM_MEDIA_TYPE)]
    request_id = environ.get("HTTP_X_REQUEST_ID", "")
    if REQUEST_ID_PATTERN.match(request_id):
        headers.append(("X-Request-ID", request_id))
    else:
        request_id = ""
    # No app context out here: the standard library's json, not Flask's.
    payload = stdlib_json.dumps(problem_body(Problem(500, "An unexpected error occurred."), request_id)).encode()
    headers.append(("Content-Length", str(len(payload))))
    start_response("500 Internal Server Error", headers)
    return [payload]
