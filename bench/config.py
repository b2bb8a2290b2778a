"""The benchmark's settings, from ``BENCH_*`` environment variables, checked before anything starts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The results table goes between the bench markers of this file.
README = ROOT / "bench" / "README.md"

# nginx's request-rate and connection limits, raised so they do not cap the load; every other
# setting of the stack keeps its default.
RAISED_LIMITS = {
    "NGINX_RATE": "1000000r/s",
    "NGINX_BURST": "1000000",
    "NGINX_AUTH_RATE": "1000000r/s",
    "NGINX_AUTH_BURST": "1000000",
    "NGINX_CONN_PER_IP": "10000",
}


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class ConfigError(ValueError):
    """A ``BENCH_*`` variable has a value the benchmark cannot use."""


def int_setting(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {raw!r})") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be from {low} to {high} (got {value})")
    return value


@dataclass(frozen=True)
class BenchConfig:
    project: str
    http_port: int
    https_port: int
    ceiling_port: int
    seed_port: int
    duration: int  # seconds of each measured run
    warmup: int  # seconds of load before each measured run, not counted
    connections: int
    threads: int
    scale_rows: tuple[int, ...]  # table sizes of the scale runs; the main scenarios use the middle one
    refresh_tokens: int
    results_dir: Path
    update_readme: bool
    keep_stack: bool
    # Where load goes: the two nginx containers' own addresses when this host reaches them (see
    # BenchStack.load_urls); None: their published ports.
    edge_url: str | None = None
    ceiling_edge_url: str | None = None
    seed_edge_url: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ceiling_url(self) -> str:
        return f"http://127.0.0.1:{self.ceiling_port}"

    @property
    def seed_url(self) -> str:
        return f"http://127.0.0.1:{self.seed_port}"

    @property
    def load_url(self) -> str:
        return self.edge_url or self.base_url

    @property
    def ceiling_load_url(self) -> str:
        return self.ceiling_edge_url or self.ceiling_url

    @property
    def seed_load_url(self) -> str:
        return self.seed_edge_url or self.seed_url

    @property
    def main_rows(self) -> int:
        return self.scale_rows[len(self.scale_rows) // 2]

    @classmethod
    def from_env(cls) -> BenchConfig:
        rows = tuple(int(r) for r in (os.environ.get("BENCH_ROWS") or "1000,100000,1000000").split(",") if r.strip())
        if not rows or sorted(rows) != list(rows) or rows[0] < 200:
            raise ConfigError("BENCH_ROWS must be increasing table sizes of at least 200, e.g. 1000,100000,1000000")
        project = os.environ.get("BENCH_PROJECT") or "wharf-bench"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", project):
            raise ConfigError(f"BENCH_PROJECT must be lowercase letters, digits, - and _ (got {project!r})")
        offset = int_setting("BENCH_PORT_OFFSET", 0, 0, 40_000)  # another session's bench on the same host
        return cls(
            project=project,
            http_port=18080 + offset,
            https_port=18443 + offset,
            ceiling_port=18090 + offset,
            seed_port=18091 + offset,
            duration=int_setting("BENCH_DURATION", 10, 1, 600),
            warmup=2,
            connections=int_setting("BENCH_CONNECTIONS", 64, 1, 10000),
            threads=2,
            scale_rows=rows,
            refresh_tokens=40000,
            results_dir=ROOT / "bench" / "results",
            update_readme=True,
            keep_stack=(os.environ.get("BENCH_KEEP") or "0") == "1",
        )
