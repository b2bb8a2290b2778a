"""WharfFlask: the coroutine check once per function, and nothing kept per request."""

from __future__ import annotations

from typing import Any

import flask.app
import pytest
from flask.views import View

from wharf_common.web import WharfFlask


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every function Flask asks ``iscoroutinefunction`` about."""
    asked: list[Any] = []
    real = flask.app.iscoroutinefunction

    def counting(func: Any) -> bool:
        asked.append(func)
        return real(func)

    monkeypatch.setattr(flask.app, "iscoroutinefunction", counting)
    return asked


def test_views_and_hooks_are_checked_once_each(checks: list[Any]) -> None:
    app = WharfFlask(__name__)
    app.before_request(lambda: None)
    app.after_request(lambda response: response)
    app.get("/")(lambda: "ok")
    client = app.test_client()
    assert client.get("/").text == "ok"
    after_one = len(checks)
    assert after_one >= 3
    for _ in range(5):
        assert client.get("/").text == "ok"
    assert len(checks) == after_one


def test_a_class_based_view_is_not_kept_per_request(checks: list[Any]) -> None:
    class Hello(View):
        def dispatch_request(self) -> str:
            return "hello"

    app = WharfFlask(__name__)
    app.add_url_rule("/", view_func=Hello.as_view("hello"))
    client = app.test_client()
    for _ in range(5):
        assert client.get("/").text == "hello"
    assert len(app._synchronous) == 1  # the as_view function; not one bound method per request
