"""Typed access to what the api's app factory builds, besides the shared ones (wharf_common.extensions)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from wharf_common.cache import Cache

KEY = "wharf_api"


@dataclass(frozen=True)
class ApiExtensions:
    cache: Cache


def init_app(app: Flask, extensions: ApiExtensions) -> None:
    app.extensions[KEY] = extensions


def of(app: Flask | None = None) -> ApiExtensions:
    return (app or current_app).extensions[KEY]
