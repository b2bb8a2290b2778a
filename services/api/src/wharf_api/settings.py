"""The api service's settings: the shared ones plus its own."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field

from wharf_common.settings import CommonSettings
from wharf_common.tokens import MAX_LEEWAY_SECONDS


class ApiSettings(CommonSettings):
    service_name: str = "api"

    # Where auth publishes its public signing keys; fetched rarely, never per request.
    auth_jwks_url: AnyHttpUrl = AnyHttpUrl("http://auth:8000/.well-known/jwks.json")
    jwks_cache_seconds: float = Field(default=300.0, ge=1, le=86_400)
    jwks_min_refresh_seconds: float = Field(default=5.0, ge=0, le=3600)  # refetch on an unknown kid
    token_leeway_seconds: float = Field(default=30.0, ge=0, le=MAX_LEEWAY_SECONDS)

    # 0 turns the read cache off (every read goes to Postgres; writes still invalidate, for replicas
    # that cache). For measuring the uncached path (`make bench`) and for debugging.
    cache_ttl_seconds: int = Field(default=60, ge=0, le=86_400)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60, le=604_800)
