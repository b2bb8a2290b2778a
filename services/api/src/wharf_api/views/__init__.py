"""The api's resources, each declared in a module of its own (docs/adding-a-resource.md)."""

from __future__ import annotations

from flask import Flask

from wharf_api.resource import Resource, mount
from wharf_api.views import users

RESOURCES: tuple[Resource, ...] = (users.RESOURCE,)


def init_app(app: Flask) -> None:
    mount(app, *RESOURCES)
