"""Session fixtures shared by every suite: one real Postgres and one real Redis container.

Images come from POSTGRES_IMAGE / REDIS_IMAGE; when they are unset (``pytest`` run directly, not
through ``make test``), scripts/base-images.sh chooses them exactly as ``make test`` does, so a
machine without a registry runs the local drop-ins there too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk cannot be pulled offline

ROOT = Path(__file__).resolve().parent
PG_SUPERUSER_PASSWORD = "test-superuser-password"


def base_image(name: str) -> str:
    """``$NAME`` if set, else what scripts/base-images.sh chooses (official or registry-free)."""
    if not os.environ.get(name):
        names = ("POSTGRES_IMAGE", "REDIS_IMAGE", "NGINX_IMAGE", "PROMETHEUS_IMAGE")
        script = f'source "{ROOT}/scripts/base-images.sh" >&2 && echo ' + " ".join(f'"${n}"' for n in names)
        chosen = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()
        for chosen_name, image in zip(names, chosen, strict=True):
            os.environ.setdefault(chosen_name, image)
    return os.environ[name]


SERVICE_DB_PASSWORDS = {"auth": "test-auth-db-password", "api": "test-api-db-password"}


@pytest.fixture(scope="session")
def postgres_container() -> Iterator[object]:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        base_image("POSTGRES_IMAGE"),
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

    with RedisContainer(base_image("REDIS_IMAGE")) as container:
        yield container


@pytest.fixture(scope="session")
def postgres_address(postgres_container: object) -> tuple[str, int]:
    return postgres_container.get_container_host_ip(), int(postgres_container.get_exposed_port(5432))  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def redis_url(redis_container: object) -> str:
    """Redis at its container's own address, as the services reach it, not through the published
    port: Docker's userland proxy relays each connection on its own, so a write's reply could reach
    one client before an invalidation push Redis wrote earlier to another client's connection."""
    container = redis_container.get_wrapped_container()  # type: ignore[attr-defined]
    container.reload()
    network = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))
    return f"redis://{network['IPAddress']}:6379/0"


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


@pytest.fixture(scope="session")
def truncate_tables() -> Callable[..., None]:
    """``truncate_tables(app, metadata)``: empty every table of ``metadata`` (a service's models),
    so a new table needs no change to the fixtures."""
    from flask import Flask
    from sqlalchemy import MetaData, text

    from wharf_common.db import get_session

    def truncate(app: Flask, metadata: MetaData) -> None:
        names = ", ".join(f'"{table.schema}"."{table.name}"' for table in metadata.sorted_tables)
        with app.app_context():
            session = get_session()
            session.execute(text(f"TRUNCATE {names} CASCADE"))
            session.commit()

    return truncate


class TcpProxy:
    """A TCP relay to a real server, for fault injection: ``cut()`` drops every connection and
    refuses new ones (the server looks down), ``freeze()`` keeps every connection open and accepts
    new ones but relays nothing (the server hangs, as under ``docker pause``: the kernel still
    acknowledges, nothing answers), ``restore()`` lets traffic through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0  # connection attempts, refused ones included
        self._open = threading.Event()
        self._open.set()
        self._flowing = threading.Event()  # cleared while frozen: bytes wait in the relay
        self._flowing.set()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # the 5 s bound the connect only: an idle connection stays open
            with self._lock:
                self._connections.update({client, upstream})
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._connections.discard(sock)

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            connections, self._connections = self._connections, set()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def freeze(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._open.set()
        self._flowing.set()

    def close(self) -> None:
        self.cut()
        self._flowing.set()  # frozen relays see their sockets closed and end
        self._listener.close()


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[tuple[str, int]], TcpProxy]]:
    """Start relays to real servers (closed at the end of the test)."""
    proxies: list[TcpProxy] = []

    def start(target: tuple[str, int]) -> TcpProxy:
        proxies.append(TcpProxy(target))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()
