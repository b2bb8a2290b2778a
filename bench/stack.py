"""The benchmark's own compose project: the product stack plus the framework ceiling (bench/compose.bench.yaml)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.config import RAISED_LIMITS, ROOT, BenchConfig

COMPOSE = [str(ROOT / "scripts" / "compose.sh")]
PRODUCT_FILES = ["-f", "compose.yaml"]
BENCH_FILES = [*PRODUCT_FILES, "-f", "bench/compose.bench.yaml"]
REFERENCE_SERVICES = ["ceiling", "nginx-ceiling", "seed-recipe", "nginx-seed"]


class StackError(RuntimeError):
    """The stack did not come up, or a command against it failed."""


class BenchStack:
    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.env = {
            **os.environ,
            **RAISED_LIMITS,
            "COMPOSE_PROJECT_NAME": config.project,
            "WHARF_HTTP_PORT": str(config.http_port),
            "WHARF_BIND": "127.0.0.1",
            "WHARF_HTTPS_PORT": str(config.https_port),
            "BENCH_CEILING_PORT": str(config.ceiling_port),
            "BENCH_SEED_PORT": str(config.seed_port),
        }
        self.secrets_dir = Path(os.environ.get("WHARF_SECRETS_DIR") or ROOT / "deploy" / "compose" / "secrets")

    # -- compose ---------------------------------------------------------------------------------

    def compose(
        self, *args: str, files: list[str] = BENCH_FILES, env: dict[str, str] | None = None, timeout: float = 900
    ) -> str:
        command = [*COMPOSE, "-p", self.config.project, *files, *args]
        result = subprocess.run(
            command, cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise StackError(f"{' '.join(command[1:])} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def build(self, *, references: bool = True) -> None:
        # The references' image is built FROM the api image: that one first.
        self.compose("build", "--quiet", files=PRODUCT_FILES)
        if references:
            self.compose("build", "--quiet", "ceiling")

    def make_up(self) -> float:
        """Seconds `make up` takes (the product stack only), as ops run it."""
        started = time.monotonic()
        result = subprocess.run(
            ["make", "--no-print-directory", "up"], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            raise StackError(f"make up failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        return time.monotonic() - started

    def up_references(self) -> None:
        self.compose("up", "--detach", "--wait", "--wait-timeout", "240", *REFERENCE_SERVICES)

    def stop_product(self) -> None:
        """`make down` for this project, keeping the volumes (so the next `make up` is warm)."""
        self.compose("down", "--remove-orphans", files=PRODUCT_FILES)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans")

    def set_cache_ttl(self, seconds: int) -> None:
        """Recreate the api replicas with CACHE_TTL_SECONDS (0: reads bypass the cache), then wait until
        nginx routes to the new ones."""
        env = {"CACHE_TTL_SECONDS": str(seconds)}
        self.compose("up", "--detach", "--wait", "--wait-timeout", "240", "--no-deps", "api", env=env)
        self.wait_routed("/api/healthz")

    def wait_routed(self, path: str, *, consecutive: int = 20, timeout: float = 60) -> None:
        """Until ``path`` answers 200 through nginx ``consecutive`` times in a row (replicas re-resolved)."""
        deadline = time.monotonic() + timeout
        streak = 0
        while streak < consecutive:
            if time.monotonic() > deadline:
                raise StackError(f"{path} did not answer steadily through nginx within {timeout:.0f} s")
            try:
                with urllib.request.urlopen(self.config.base_url + path, timeout=2) as response:  # noqa: S310 - our URL
                    streak = streak + 1 if response.status == 200 else 0
            except (urllib.error.URLError, OSError):
                streak = 0
                time.sleep(0.5)

    # -- containers ------------------------------------------------------------------------------

    def containers(self) -> list[dict[str, str]]:
        out = self.compose("ps", "--format", "json")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def container_id(self, service: str) -> str:
        ids = self.compose("ps", "--quiet", service).split()
        if not ids:
            raise StackError(f"no running {service} container")
        return ids[0]

    def container_ids(self, services: tuple[str, ...]) -> list[str]:
        """Full ids of every running container (replicas included) of ``services``."""
        return self.compose("ps", "--quiet", *services).split() if services else []

    def load_urls(self) -> dict[str, str]:
        """``edge_url``/``ceiling_edge_url``/``seed_edge_url``: each nginx's own address on its compose
        network, for the ones this host can connect to directly (see :meth:`edge_url`)."""
        services = (("edge_url", "nginx"), ("ceiling_edge_url", "nginx-ceiling"), ("seed_edge_url", "nginx-seed"))
        found = {key: self.edge_url(service) for key, service in services}
        return {key: url for key, url in found.items() if url is not None}

    def edge_url(self, service: str = "nginx") -> str | None:
        """``service``'s own address on its compose network when this host reaches it (Docker on Linux;
        not Docker Desktop), else None.

        A published port on 127.0.0.1 goes through Docker's userland proxy, which copies every byte
        in a process of its own: ~80 us of CPU per request on the 2-core benchmark machine, charged
        to the same cores as the stack, and no part of it (a client on another host, or a cluster's
        ingress, never meets it)."""
        address = self._reachable_address(self.container_id(service), 8080)
        return None if address is None else f"http://{address}:8080"

    @staticmethod
    def _reachable_address(container: str, port: int) -> str | None:
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        result = subprocess.run(
            ["docker", "inspect", "-f", template, container], capture_output=True, text=True, timeout=30
        )
        for address in result.stdout.split() if result.returncode == 0 else []:
            try:
                socket.create_connection((address, port), timeout=1).close()
            except OSError:
                continue
            return address
        return None

    def secret(self, relative: str) -> str:
        return (self.secrets_dir / relative).read_text(encoding="utf-8").strip()

    def docker_exec(self, service: str, *command: str, env: dict[str, str] | None = None, stdin: str = "") -> str:
        flags = [item for name, value in (env or {}).items() for item in ("-e", f"{name}={value}")]
        result = subprocess.run(
            ["docker", "exec", "-i", *flags, self.container_id(service), *command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise StackError(f"{service}: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def psql(self, role: str, sql: str) -> str:
        """Run SQL in Postgres as a service's own login role (``api`` or ``auth``), over TCP like the services."""
        password = self.secret(f"{role}/db_password")
        command = ["psql", "-h", "127.0.0.1", "-U", role, "-d", "wharf", "-v", "ON_ERROR_STOP=1", "-qAt"]
        return self.docker_exec("postgres", *command, env={"PGPASSWORD": password}, stdin=sql)
