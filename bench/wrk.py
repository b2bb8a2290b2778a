"""Running wrk (with bench/lua/wharf.lua) and reading its result line."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

from bench.config import ROOT

SCRIPT = ROOT / "bench" / "lua" / "wharf.lua"
RESULT_PREFIX = "WRK_JSON "


class WrkError(RuntimeError):
    """wrk failed to run or printed no result."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        """Every failed request: non-2xx/3xx answers (wrk's ``status``), timeouts and socket errors."""
        return sum(self.errors.values())


def parse_output(stdout: str) -> WrkResult:
    """The result of the ``WRK_JSON {...}`` line that wharf.lua's done() prints."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            latency = data["latency_us"]
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                p50_ms=latency["p50"] / 1000,
                p90_ms=latency["p90"] / 1000,
                p99_ms=latency["p99"] / 1000,
                p999_ms=latency["p999"] / 1000,
                errors={k: int(v) for k, v in data["errors"].items()},
            )
    raise WrkError(f"no {RESULT_PREFIX.strip()} line in wrk's output:\n{stdout[-2000:]}")


def run(url: str, *, seconds: int, connections: int, threads: int, options: dict[str, str]) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("wrk is not installed (apt-get install wrk)")
    # `run` keeps generated values (emails of POST) unique across runs.
    defaults = {"threads": str(threads), "run": secrets.token_hex(4)}
    args = [f"{k}={v}" for k, v in {**defaults, **options}.items()]
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(SCRIPT), url]
    result = subprocess.run([*command, "--", *args], capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        raise WrkError(f"wrk exited with {result.returncode}:\n{result.stderr[-2000:]}")
    return parse_output(result.stdout)
