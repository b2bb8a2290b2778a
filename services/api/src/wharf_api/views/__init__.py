"""The api's routes, one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from wharf_api.views import users


def init_app(app: Flask) -> None:
    for module in (users,):
        app.register_blueprint(module.bp)
