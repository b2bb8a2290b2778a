"""Session fixtures shared by every suite: one real Postgres and one real Redis container.

Images come from POSTGRES_IMAGE / REDIS_IMAGE (scripts/test.sh sets them to the same base images
the stack uses, so a machine without a registry runs the local drop-ins).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk cannot be pulled offline

PG_SUPERUSER_PASSWORD = "test-superuser-password"
SERVICE_DB_PASSWORDS = {"auth": "test-auth-db-password", "api": "test-api-db-password"}


@pytest.fixture(scope="session")
def postgres_container() -> Iterator[object]:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        os.environ.get("POSTGRES_IMAGE", "postgres:17"),
        username="postgres",
        password=PG_SUPERUSER_PASSWORD,
        dbname="wharf",
        driver=None,
    )
    with container:
        yield container


@pytest.fixture(scope="session")
def redis_container() -> Iterator[object]:
    from testcontainers.community.redis import RedisContainer

    with RedisContainer(os.environ.get("REDIS_IMAGE", "redis:8")) as container:
        yield container


@pytest.fixture(scope="session")
def postgres_address(postgres_container: object) -> tuple[str, int]:
    return postgres_container.get_container_host_ip(), int(postgres_container.get_exposed_port(5432))  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def redis_url(redis_container: object) -> str:
    host = redis_container.get_container_host_ip()  # type: ignore[attr-defined]
    port = redis_container.get_exposed_port(6379)  # type: ignore[attr-defined]
    return f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def provisioned_database(
    postgres_address: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, int]:
    """Roles and schemas for both services, created by the same code the stack's db-init runs."""
    from wharf_common import provision

    host, port = postgres_address
    secrets_dir: Path = tmp_path_factory.mktemp("provision-secrets")
    env = {
        "DATABASE_ADMIN_URL": f"postgresql://postgres@{host}:{port}/wharf",
        "DB_SERVICES": ",".join(SERVICE_DB_PASSWORDS),
    }
    (secrets_dir / "admin").write_text(PG_SUPERUSER_PASSWORD)
    env["DATABASE_ADMIN_PASSWORD_FILE"] = str(secrets_dir / "admin")
    for service, password in SERVICE_DB_PASSWORDS.items():
        (secrets_dir / service).write_text(password)
        env[f"{service.upper()}_DB_PASSWORD_FILE"] = str(secrets_dir / service)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        provision.main()
        provision.main()  # idempotent: the stack re-runs it on every start
    return host, port


@pytest.fixture(scope="session")
def connection_settings(provisioned_database: tuple[str, int], redis_url: str) -> Callable[[str], dict[str, object]]:
    """Settings keyword arguments that connect a service as its own database role."""
    host, port = provisioned_database

    def for_service(service: str) -> dict[str, object]:
        return {
            "database_url": f"postgresql://{service}@{host}:{port}/wharf",
            "database_password": SERVICE_DB_PASSWORDS[service],
            "redis_url": redis_url,
        }

    return for_service
