"""The auth service's settings: the shared ones plus its own."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from wharf_common.settings import CommonSettings

# OWASP / RFC 9106 floor for Argon2id; weaker parameters are refused at start-up.
ARGON2_MIN_MEMORY_KIB = 19456
ARGON2_MIN_TIME_COST = 2
MFA_KEY_MIN_LENGTH = 32


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
    # A used refresh token presented again within this many seconds of its first use gets the same
    # new pair back (a retried refresh); later, reuse ends the whole session. 0: reuse always does.
    refresh_reuse_interval_seconds: int = Field(default=5, ge=0, le=60)

    argon2_memory_kib: int = Field(default=ARGON2_MIN_MEMORY_KIB, ge=ARGON2_MIN_MEMORY_KIB, le=4_194_304)
    argon2_time_cost: int = Field(default=ARGON2_MIN_TIME_COST, ge=ARGON2_MIN_TIME_COST, le=20)

    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_window_seconds: int = Field(default=900, ge=1, le=86_400)
    ip_max_failures: int = Field(default=50, ge=1, le=100_000)

    # Account recovery (password reset, email verification): tokens mailed to the address.
    account_token_ttl_seconds: int = Field(default=1800, ge=60, le=86_400)
    # Requests for a mail (reset or verification resend) per address and per client address, in a window.
    recovery_max_requests: int = Field(default=3, ge=1, le=1000)
    recovery_ip_max_requests: int = Field(default=20, ge=1, le=100_000)
    recovery_window_seconds: int = Field(default=3600, ge=1, le=86_400)
    # False: an account signs in only once its email address is verified.
    allow_unverified_login: bool = True
    # Where the pages for mailed links live: mails link to <PUBLIC_URL>/reset-password#token=...,
    # <PUBLIC_URL>/verify-email#token=... and <PUBLIC_URL>/sign-in-alert#token=... (a fragment:
    # browsers never send it to a server). The default is the edge's own pages (deploy/nginx/account).
    public_url: AnyHttpUrl = AnyHttpUrl("http://localhost:8080/account")

    # The second factor's secrets are stored encrypted under keys derived from this secret (a file:
    # MFA_ENCRYPTION_KEY_FILE): one secret of at least 32 characters per line, the first encrypts,
    # every line decrypts (rotation: add a new first line; see docs/operations.md).
    mfa_encryption_key: SecretStr
    # True: an account with the admin role signs in only with a second factor (without one it is
    # refused, and it cannot remove the one it has).
    require_admin_mfa: bool = False
    # A sign-in from a client (description and network) that has not signed in to the account in
    # this many days mails the owner an alert; 0 turns the alerts off.
    sign_in_alert_days: int = Field(default=30, ge=0, le=365)
    # Account events (GET /auth/events) older than this are removed by the mail worker.
    account_events_retention_days: int = Field(default=90, ge=1, le=3650)

    @field_validator("mfa_encryption_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:  # the mail worker's (MailWorkerSettings)
            return value
        lines = [line.strip() for line in value.get_secret_value().splitlines() if line.strip()]
        if not lines or any(len(line) < MFA_KEY_MIN_LENGTH for line in lines):
            raise ValueError(f"every line must be a secret of at least {MFA_KEY_MIN_LENGTH} characters")
        return value


class MailWorkerSettings(AuthSettings):
    """The mail worker (``python -m wharf_auth.worker``): auth's settings plus the SMTP server's."""

    service_name: str = "auth-mail"
    # The worker never reads a second factor, so it is not given the key (it is auth's alone).
    mfa_encryption_key: SecretStr | None = None  # type: ignore[assignment]

    smtp_host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    smtp_port: int = Field(default=587, ge=1, le=65_535)
    # starttls: plain connection upgraded with STARTTLS (port 587); tls: TLS from the start (465);
    # none: no encryption (only for a server on a private network, such as the development sink).
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    mail_from: str = Field(default="Wharf <no-reply@wharf.localhost>", min_length=3, max_length=320)

    @field_validator("smtp_username", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # compose and ConfigMaps pass an unset value as ""

    @model_validator(mode="after")
    def _credentials_together(self) -> Self:
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD (SMTP_PASSWORD_FILE) go together")
        if self.smtp_password is not None and self.smtp_security == "none":
            raise ValueError("SMTP_SECURITY=none would send SMTP_PASSWORD in clear text; use starttls or tls")
        return self
