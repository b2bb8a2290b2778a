"""The auth service's routes, one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from wharf_auth.views import accounts, internal, keys, mfa, recovery, sessions, tokens


def init_app(app: Flask) -> None:
    for module in (accounts, tokens, mfa, sessions, recovery, keys, internal):
        app.register_blueprint(module.bp)
