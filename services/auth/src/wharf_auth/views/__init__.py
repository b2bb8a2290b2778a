"""The auth service's routes, one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from wharf_auth.views import accounts, internal, keys, recovery, tokens


def init_app(app: Flask) -> None:
    for module in (accounts, tokens, recovery, keys, internal):
        app.register_blueprint(module.bp)
