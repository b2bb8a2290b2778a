"""The auth service's settings: the shared ones plus its own."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from wharf_common.settings import CommonSettings

# OWASP / RFC 9106 floor for Argon2id; weaker parameters are refused at start-up.
ARGON2_MIN_MEMORY_KIB = 19456
ARGON2_MIN_TIME_COST = 2


class AuthSettings(CommonSettings):
    service_name: str = "auth"

    # Directory of PEM Ed25519 private keys; all are published, the newest activated one signs.
    signing_keys_dir: Path = Path("/run/secrets/auth/signing-keys")
    # A new key is published at once and signs only after this many seconds (counted from the UTC
    # time in its name, else its mtime), so every verifier can have fetched it first: keep it above
    # the verifiers' JWKS refresh interval (api: wharf_api.JWKS_MIN_REFRESH_SECONDS, 5 s) plus one second.
    # 0 signs with a new key at once. Kubernetes sets more: a rotated Secret reaches pods late.
    signing_key_activation_seconds: int = Field(default=10, ge=0, le=3600)
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=2_592_000, ge=60, le=31_536_000)

    argon2_memory_kib: int = Field(default=ARGON2_MIN_MEMORY_KIB, ge=ARGON2_MIN_MEMORY_KIB, le=4_194_304)
    argon2_time_cost: int = Field(default=ARGON2_MIN_TIME_COST, ge=ARGON2_MIN_TIME_COST, le=20)

    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_window_seconds: int = Field(default=900, ge=1, le=86_400)
    ip_max_failures: int = Field(default=50, ge=1, le=100_000)
