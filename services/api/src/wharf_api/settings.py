"""The api service's settings: the shared ones plus its own."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field

from wharf_common.settings import CommonSettings


class ApiSettings(CommonSettings):
    service_name: str = "api"

    # The auth service on the backend network: its public signing keys (JWKS, fetched rarely,
    # never per request) and its internal revocation list.
    auth_url: AnyHttpUrl = AnyHttpUrl("http://auth:8000")

    # Seconds cached documents live; 0 turns the read cache off (every read goes to Postgres;
    # writes still invalidate, for replicas that cache). `make bench` measures both.
    cache_ttl_seconds: int = Field(default=60, ge=0, le=86_400)

    # PATCH and DELETE without If-Match are refused (428 Precondition Required, RFC 6585), so that
    # no client can overwrite a change it has not seen (lost updates).
    require_if_match: bool = False
