"""The last-resort WSGI wrapper: what escapes Flask still leaves as problem+json."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from werkzeug.test import EnvironBuilder

from wharf_common.problems import PROBLEM_MEDIA_TYPE, LastResort


class _Server:
    """A WSGI server's start_response. Called twice, gunicorn's appends the second call's headers
    to the first's, so the wrapper must call it exactly once."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: dict[str, str] = {}

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        assert self.status is None, "start_response called twice"
        self.status, self.headers = status, dict(headers)


def _app_whose_teardown_fails() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return "made"

    @app.teardown_appcontext
    def fail(_exc: BaseException | None) -> None:
        raise RuntimeError("teardown failed")

    return app


def _call(wrapped: LastResort, **environ: str) -> tuple[_Server, bytes]:
    server = _Server()
    builder = EnvironBuilder(path="/", headers=environ)
    body = b"".join(wrapped(builder.get_environ(), server.start_response))
    return server, body


def test_an_error_after_the_answer_was_made_becomes_a_problem_500_with_the_request_id() -> None:
    server, body = _call(LastResort(_app_whose_teardown_fails().wsgi_app), **{"X-Request-ID": "req-12345678"})
    assert server.status == "500 Internal Server Error"
    assert server.headers["Content-Type"] == PROBLEM_MEDIA_TYPE
    assert server.headers["X-Request-ID"] == "req-12345678"
    assert int(server.headers["Content-Length"]) == len(body)
    problem = json.loads(body)
    assert problem == {
        "type": "https://wharf.dev/problems/internal-server-error",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "An unexpected error occurred.",
        "request_id": "req-12345678",
    }
    assert "teardown failed" not in body.decode()


def test_a_malformed_request_id_is_not_echoed() -> None:
    server, body = _call(LastResort(_app_whose_teardown_fails().wsgi_app), **{"X-Request-ID": "<script>"})
    assert "X-Request-ID" not in server.headers
    assert "request_id" not in json.loads(body)


def test_an_answer_without_errors_passes_through() -> None:
    app = _app_whose_teardown_fails()
    app.teardown_appcontext_funcs.clear()
    server, body = _call(LastResort(app.wsgi_app))
    assert (server.status, body) == ("200 OK", b"made")
