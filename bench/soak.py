"""`make soak`: memory under a long mixed load. Is every container's memory bounded, well below its limit?

The product stack runs as its own compose project (``wharf-soak``) with the edge's rate limits raised
(the load comes from one address); many accounts sign in, the users table is seeded in SQL, and wrk
(``bench/lua/wharf.lua``, mode ``mix``) sends 80% reads of single users picked at random among many,
10% list pages at random cursors and sizes, and 10% creates, each request with the token of a random
account. Every ``SOAK_SAMPLE_SECONDS`` each container's memory is read from its cgroup and printed.
The run passes when every container stays below ``LIMIT_SHARE`` of its memory limit and is flat over
the last third (it grew by at most ``FLAT_SHARE`` of its limit there); the result goes into
bench/README.md (section "Memory under a long mixed load").

Settings (environment): ``SOAK_SECONDS`` (1800), ``SOAK_SAMPLE_SECONDS`` (30), ``SOAK_ACCOUNTS``
(200), ``SOAK_ROWS`` (100000), ``SOAK_CONNECTIONS`` (16), ``SOAK_PROJECT`` (wharf-soak),
``SOAK_HTTP_PORT``/``SOAK_HTTPS_PORT`` (18180/18543), ``SOAK_KEEP=1`` to leave the stack running.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import footprint, seed, wrk
from bench.cgroup import memory_bytes
from bench.config import README, ROOT, BenchConfig, ConfigError, int_setting
from bench.runner import log
from bench.stack import BenchStack, StackError

LIMIT_SHARE = 0.8  # every container stays below this share of its memory limit
FLAT_SHARE = 0.05  # and grows by at most this share of its limit over the last third of the run
PAGE_SIZES = (10, 20, 50, 100)
README_BEGIN = "<!-- soak:begin (written by `make soak`) -->"
README_END = "<!-- soak:end -->"
MIB = 1024 * 1024


@dataclass(frozen=True)
class SoakConfig:
    seconds: int
    sample_seconds: int
    accounts: int
    rows: int
    connections: int
    project: str
    http_port: int
    https_port: int
    keep_stack: bool

    @classmethod
    def from_env(cls) -> SoakConfig:
        seconds = int_setting("SOAK_SECONDS", 1800, 30, 86_400)
        return cls(
            seconds=seconds,
            sample_seconds=int_setting("SOAK_SAMPLE_SECONDS", 30, 1, seconds),
            accounts=int_setting("SOAK_ACCOUNTS", 200, 1, 10_000),
            rows=int_setting("SOAK_ROWS", 100_000, 1_000, 10_000_000),
            connections=int_setting("SOAK_CONNECTIONS", 16, 1, 1_000),
            project=os.environ.get("SOAK_PROJECT") or "wharf-soak",
            http_port=int_setting("SOAK_HTTP_PORT", 18180, 1, 65_535),
            https_port=int_setting("SOAK_HTTPS_PORT", 18543, 1, 65_535),
            keep_stack=(os.environ.get("SOAK_KEEP") or "0") == "1",
        )


@dataclass(frozen=True)
class Container:
    id: str
    name: str  # without the project's prefix, e.g. api-1
    limit: int  # bytes; 0: none


def containers(project: str) -> list[Container]:
    """The project's running containers with their memory limits, by name."""
    ids = subprocess.run(
        ["docker", "ps", "--quiet", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not ids:
        return []
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}} {{.Name}} {{.HostConfig.Memory}}", *ids],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        cid, name, limit = line.split()
        found.append(Container(cid, name.lstrip("/").removeprefix(f"{project}-"), int(limit)))
    return sorted(found, key=lambda c: c.name)


@dataclass
class Series:
    """One container's memory over the run: bytes at each sample time."""

    name: str
    limit: int
    bytes: list[int] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(self.bytes)

    def peak_share(self) -> float | None:
        return self.peak / self.limit if self.limit else None

    def last_third_growth(self, times: list[float]) -> int:
        """How much the least-squares line through the last third of the samples rises across it."""
        start = len(self.bytes) - max(2, len(self.bytes) // 3)
        xs, ys = times[start:], self.bytes[start:]
        if len(xs) < 2 or xs[0] == xs[-1]:
            return 0
        slope = statistics.linear_regression(xs, ys).slope
        return round(slope * (xs[-1] - xs[0]))


@dataclass
class Run:
    times: list[float]  # seconds since the load started, one per sample
    series: dict[str, Series]
    result: wrk.WrkResult

    def failures(self, *, flat: bool = True) -> list[str]:
        """What breaks the bounds: above LIMIT_SHARE of a limit, or (with ``flat``) still growing at the end."""
        failed = []
        for s in self.series.values():
            share = s.peak_share()
            if share is None:
                failed.append(f"{s.name}: no memory limit")
            elif share >= LIMIT_SHARE:
                failed.append(f"{s.name}: peaked at {s.peak / MIB:.0f} MiB, {share:.0%} of its {s.limit / MIB:.0f} MiB")
            growth = s.last_third_growth(self.times)
            if flat and s.limit and growth > FLAT_SHARE * s.limit:
                grew = f"{growth / MIB:.0f} MiB over the last third"
                failed.append(f"{s.name}: grew {grew}, more than {FLAT_SHARE:.0%} of its limit")
        return failed


def sample(found: Iterable[Container]) -> dict[str, int]:
    usage = {}
    for c in found:
        used = memory_bytes(c.id)
        if used is None:
            raise StackError(f"cannot read the memory cgroup of {c.name} (run on the Docker host, as root)")
        usage[c.name] = used
    return usage


def drive(
    url: str,
    files: dict[str, Path],
    *,
    project: str,
    seconds: int,
    sample_seconds: int,
    connections: int,
    pace_ms: float | None = None,
    on_sample: Callable[[float, dict[str, int]], None] = lambda _t, _u: None,
) -> Run:
    """The mixed load for ``seconds`` against ``url``, with every container's memory sampled every
    ``sample_seconds`` (at the start and at the end too)."""
    found = containers(project)
    series = {c.name: Series(c.name, c.limit) for c in found}
    times: list[float] = []
    options = {"mode": "mix", "data": str(files["ids"]), "pages": str(files["pages"]), "tokens": str(files["tokens"])}
    if pace_ms is not None:
        options["pace_ms"] = f"{pace_ms:.3f}"

    def record(elapsed: float) -> None:
        usage = sample(found)
        times.append(round(elapsed, 1))
        for name, used in usage.items():
            series[name].bytes.append(used)
        on_sample(elapsed, usage)

    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        record(0.0)
        load = pool.submit(wrk.run, url, seconds=seconds, connections=connections, threads=2, options=options)
        next_at = started + sample_seconds
        while not wait([load], timeout=max(0.0, next_at - time.monotonic())).done:
            record(time.monotonic() - started)
            next_at += sample_seconds
        result = load.result()
        if time.monotonic() - started - times[-1] >= 1:  # the end, unless a sample was just taken
            record(time.monotonic() - started)
    return Run(times, series, result)


def page_paths(ids: list[str]) -> list[str]:
    """List pages of every size at cursors taken from ``ids`` (plus each size's first page)."""
    paths = [f"/api/users?limit={size}" for size in PAGE_SIZES]
    for index, user_id in enumerate(ids):
        paths.append(f"/api/users?limit={PAGE_SIZES[index % len(PAGE_SIZES)]}&cursor={seed.cursor_of(user_id)}")
    return paths


def seed_soak(stack: BenchStack, config: SoakConfig, work: Path) -> dict[str, Path]:
    """Accounts (HTTP, several at a time), users rows (SQL) and the files wrk reads."""
    log(f"seeding {config.accounts} accounts and {config.rows:,} users")
    emails = [f"soak-{n}@soak.example" for n in range(config.accounts)]
    with ThreadPoolExecutor(4) as pool:
        accounts = list(pool.map(lambda email: seed.account(stack, email, logins=1), emails))
    seed.grow_users(stack, config.rows, accounts[0].id)
    ids = seed.sample_ids(stack, min(config.rows, 20_000))
    return {
        "tokens": seed.write_lines(work / "tokens", [a.access_tokens[0] for a in accounts]),
        "ids": seed.write_lines(work / "ids", ids),
        "pages": seed.write_lines(work / "pages", page_paths(ids[:2_000])),
    }


def print_sample(names: list[str]) -> Callable[[float, dict[str, int]], None]:
    print("[soak] MiB by container:  " + "  ".join(f"{n:>11}" for n in names), flush=True)

    def show(elapsed: float, usage: dict[str, int]) -> None:
        cells = "  ".join(f"{usage[n] / MIB:>11.1f}" for n in names)
        print(f"[soak] {elapsed:>7.0f} s elapsed:  {cells}", flush=True)

    return show


def markdown(run: Run, config: SoakConfig, machine: dict[str, object]) -> str:
    """The result: memory at (about) every sixth of the run, each container's peak against its limit."""
    r = run.result
    marks = sorted({round(i * (len(run.times) - 1) / 6) for i in range(7)})
    lines = [
        f"Taken {machine['date']} on {machine['cpu']}, {machine['cores']} cores, Docker {machine['docker']}: "
        f"{config.seconds // 60} min of the mix at {config.connections} connections from {config.accounts} "
        f"accounts over {config.rows:,} users; {r.requests:,} requests ({r.rps:,.0f}/s), "
        f"{r.error_count} failed; p99 {r.p99_ms:.0f} ms.",
        "",
        "| Container | "
        + " | ".join(f"{run.times[i] / 60:.0f} min" for i in marks)
        + " | Peak | Limit | Peak / limit | Last third |",
        "|---|" + "---:|" * (len(marks) + 4),
    ]
    for s in run.series.values():
        share = s.peak_share()
        cells = [f"{s.bytes[i] / MIB:.0f}" for i in marks]
        cells += [f"{s.peak / MIB:.0f}", f"{s.limit / MIB:.0f}", "" if share is None else f"{share:.0%}"]
        cells.append(f"{s.last_third_growth(run.times) / MIB:+.0f}")
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    failures = run.failures()
    lines += ["", "MiB (`docker stats`' figure, from each container's cgroup). "]
    lines[-1] += f"Every container below {LIMIT_SHARE:.0%} of its limit and flat over the last third: " + (
        "**met**." if not failures else "**MISSED**: " + "; ".join(failures) + "."
    )
    return "\n".join(lines) + "\n"


def update_readme(text: str) -> bool:
    readme = README.read_text(encoding="utf-8")
    begin, end = readme.find(README_BEGIN), readme.find(README_END)
    if begin < 0 or end < begin:
        return False
    README.write_text(readme[: begin + len(README_BEGIN)] + "\n" + text + readme[end:], encoding="utf-8")
    return True


def main() -> int:
    try:
        config = SoakConfig.from_env()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 78
    bench_config = dataclasses.replace(
        BenchConfig.from_env(), project=config.project, http_port=config.http_port, https_port=config.https_port
    )
    stack = BenchStack(bench_config)
    # Tokens signed at the start must outlive the run.
    stack.env["ACCESS_TOKEN_TTL_SECONDS"] = str(min(86_400, config.seconds + 3_600))
    machine = footprint.machine()
    try:
        log(f"make up as project {config.project} (http://127.0.0.1:{config.http_port})")
        stack.compose("build", "--quiet", files=["-f", "compose.yaml"])
        stack.make_up()
        work = Path(tempfile.mkdtemp(prefix="wharf-soak-"))
        files = seed_soak(stack, config, work)
        names = [c.name for c in containers(config.project)]
        log(f"{config.seconds} s of the mix at {config.connections} connections")
        run = drive(
            stack.edge_url() or stack.config.base_url,
            files,
            project=config.project,
            seconds=config.seconds,
            sample_seconds=config.sample_seconds,
            connections=config.connections,
            on_sample=print_sample(names),
        )
    except (StackError, wrk.WrkError, RuntimeError) as error:
        print(f"[soak] failed: {error}", file=sys.stderr)
        return 1
    finally:
        if not config.keep_stack:
            stack.down()
    text = markdown(run, config, machine)
    results = ROOT / "bench" / "results"
    (results / "soak.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "config": dataclasses.asdict(config),
                "times": run.times,
                "memory": {s.name: {"limit": s.limit, "bytes": s.bytes} for s in run.series.values()},
                "requests": run.result.requests,
                "errors": run.result.errors,
                "written": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    print(text)
    failures = run.failures()
    if run.result.error_count:
        failures.append(f"{run.result.error_count} requests failed ({run.result.errors})")
    if config.seconds >= 1800 and not failures:
        log(f"{README.relative_to(ROOT)}: {'updated' if update_readme(text) else 'no soak markers, left alone'}")
    for failure in failures:
        log(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
