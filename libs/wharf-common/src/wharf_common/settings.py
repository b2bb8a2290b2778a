"""Typed settings from environment variables, with secrets read from ``*_FILE`` paths.

A service subclasses :class:`CommonSettings` and calls :func:`load_settings` once at start-up:
a missing or malformed setting stops the process with one line naming it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, PostgresDsn, RedisDsn, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

CONFIG_ERROR_EXIT_CODE = 78  # EX_CONFIG from sysexits.h


def read_secret(name: str) -> str | None:
    """``NAME`` from the file named by ``NAME_FILE`` (the Docker/Kubernetes secret idiom)."""
    env_name = f"{name}_FILE".upper()
    path = os.environ.get(env_name)
    if not path:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{env_name}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{env_name}: {path} is empty")
    return value


class FileSecretsSource(EnvSettingsSource):
    """Settings source for ``NAME_FILE`` variables; see :func:`read_secret`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return read_secret(field_name), field_name, False


class ServerSettings(BaseSettings):
    """What gunicorn needs (``wharf_common.gunicorn_conf`` reads these); every service's settings
    include them. Names map to upper-case environment variables."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    log_level: str = "INFO"
    # Sync workers by default (threads 1): the shortest tail at the same throughput and memory
    # (bench/README.md, "Worker model"); threads > 1 picks the threaded worker.
    gunicorn_workers: int = Field(default=3, ge=1, le=64)
    gunicorn_threads: int = Field(default=1, ge=1, le=64)
    # A worker stuck this long is killed; keep it above nginx's NGINX_PROXY_READ_TIMEOUT.
    gunicorn_timeout: int = Field(default=30, ge=5, le=600)
    # Development (`make dev`): restart a worker when a source file changes.
    gunicorn_reload: bool = False

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments win (tests), then NAME_FILE, then NAME.
        return init_settings, FileSecretsSource(settings_cls), env_settings


class CommonSettings(ServerSettings):
    """Settings every service has."""

    service_name: str

    database_url: PostgresDsn
    database_password: SecretStr | None = None
    db_pool_size: int = Field(default=5, ge=1, le=100)
    db_max_overflow: int = Field(default=5, ge=0, le=100)
    db_statement_timeout_ms: int = Field(default=5000, ge=100, le=600_000)

    redis_url: RedisDsn
    redis_username: str | None = None
    redis_password: SecretStr | None = None

    # Larger request bodies get 413 (keep it in step with nginx's NGINX_CLIENT_MAX_BODY_SIZE).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=100 * 1024 * 1024)

    # Access tokens: who issues them and for whom, and how fresh the revocation list must be.
    token_issuer: str = Field(default="wharf-auth", min_length=1)
    token_audience: str = Field(default="wharf", min_length=1)
    revocation_max_staleness_seconds: float = Field(default=30.0, gt=0, le=3600)


S = TypeVar("S", bound=ServerSettings)


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every failing variable, e.g. ``DATABASE_URL: relative URL without a base``."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        name = "_".join(str(p) for p in item["loc"]).upper() or "settings"
        parts.append(f"{name}: {item['msg']}")
    return "; ".join(parts)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings or exit the process with a one-line configuration error."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        message = describe_validation_error(error)
    except SettingsError as error:  # a source failed, e.g. an unreadable *_FILE
        message = str(error.__cause__ or error)
    print(f"configuration error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_ERROR_EXIT_CODE)
