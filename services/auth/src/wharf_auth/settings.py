"""The auth service's settings: the shared ones plus its own."""

from __future__ import annotations

from wharf_common.settings import CommonSettings


class AuthSettings(CommonSettings):
    service_name: str = "auth"
