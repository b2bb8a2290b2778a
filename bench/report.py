"""Results as JSON, a Markdown report (also written into bench/README.md) and a PNG chart."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.footprint import IdleCpu, idle_summary
from bench.scenarios import CEILING, SEED, Scenario
from bench.wrk import WrkResult

README_BEGIN = "<!-- bench:begin (written by `make bench`) -->"
README_END = "<!-- bench:end -->"
SCALE_KEYS = ("get_uncached", "list_first_uncached", "list_deep_uncached")


@dataclass(frozen=True)
class Measurement:
    key: str
    title: str
    rows: int | None
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    connections: int
    error_detail: dict[str, int] = field(default_factory=dict)
    cpu_ms: float | None = None  # CPU time of the containers on the request's path, per request
    p999_ms: float | None = None  # None in runs from before it was measured
    cpu_by_service: dict[str, float] | None = None  # cpu_ms split by service (None in earlier runs)

    @classmethod
    def of(
        cls,
        scenario: Scenario,
        connections: int,
        result: WrkResult,
        warmup: WrkResult | None = None,
        *,
        cpu_ms: float | None = None,
        cpu_by_service: dict[str, float] | None = None,
    ) -> Measurement:
        """A measured run; failures during its warm-up count too (any non-2xx/3xx fails the run)."""
        detail = dict(result.errors)
        if warmup is not None:
            for kind, count in warmup.errors.items():
                detail[kind] = detail.get(kind, 0) + count
        return cls(
            key=scenario.key,
            title=scenario.title,
            rows=scenario.rows,
            rps=round(result.rps, 1),
            p50_ms=round(result.p50_ms, 2),
            p90_ms=round(result.p90_ms, 2),
            p99_ms=round(result.p99_ms, 2),
            p999_ms=round(result.p999_ms, 2),
            requests=result.requests,
            errors=sum(detail.values()),
            connections=connections,
            cpu_ms=cpu_ms,
            cpu_by_service=cpu_by_service,
            error_detail={k: v for k, v in detail.items() if v},
        )


@dataclass(frozen=True)
class Target:
    description: str
    met: bool
    measured: str


def ceiling_rps(measurements: list[Measurement]) -> float | None:
    """The framework ceiling's requests/s: the mean of its runs (one at the start, one at the end, so
    load that other work puts on the machine meanwhile shows, and weighs on both sides alike)."""
    runs = [m.rps for m in measurements if m.key == CEILING]
    return sum(runs) / len(runs) if runs else None


def ratio(measurement: Measurement, ceiling: float | None) -> float | None:
    return round(measurement.rps / ceiling, 2) if ceiling else None


def ceiling_cpu_ms(measurements: list[Measurement]) -> float | None:
    runs = [m.cpu_ms for m in measurements if m.key == CEILING and m.cpu_ms]
    return sum(runs) / len(runs) if runs else None


def cpu_ratio(measurement: Measurement, ceiling_cpu: float | None) -> float | None:
    """The ceiling's CPU time per request over this scenario's: the ratio requests/s would have on an
    otherwise idle machine where CPU is the limit (both sides' CPU counted on their own path)."""
    return round(ceiling_cpu / measurement.cpu_ms, 2) if ceiling_cpu and measurement.cpu_ms else None


def find(measurements: list[Measurement], key: str, rows: int | None = None) -> Measurement | None:
    return next((m for m in measurements if m.key == key and (rows is None or m.rows == rows)), None)


def _ratio_target(description: str, measured: float | None, limit: float, *, at_most: bool = False) -> Target:
    if measured is None:
        return Target(description, False, "not measured")
    met = measured <= limit if at_most else measured >= limit
    return Target(description, met, f"{measured:.2f}x")


def _over(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def rps(m: Measurement | None) -> float | None:
    return m.rps if m else None


def p99(m: Measurement | None) -> float | None:
    return m.p99_ms if m else None


def cpu(m: Measurement | None) -> float | None:
    return m.cpu_ms if m else None


def targets(measurements: list[Measurement]) -> list[Target]:
    """Issue 16's, 18's and 31's targets, each a ratio within this run, and nothing failed."""
    ceiling = ceiling_rps(measurements)
    first_ceiling = find(measurements, CEILING)
    cached, cached_paced = find(measurements, "get_cached"), find(measurements, "get_cached_paced")
    ceiling_paced, seed = find(measurements, f"{CEILING}_paced"), find(measurements, SEED)
    # The uncached read at the table size of the cached one (the scale runs measure it at several).
    uncached = find(measurements, "get_uncached", cached.rows if cached else None)
    post, me = find(measurements, "post"), find(measurements, "me")
    failed = sum(m.errors for m in measurements)
    return [
        _ratio_target("cached GET >= 0.6x the framework ceiling (issue 16)", _over(rps(cached), ceiling), 0.6),
        _ratio_target(
            "cached GET p99 at 64 connections <= 1.5x the ceiling's",
            _over(p99(cached), p99(first_ceiling)),
            1.5,
            at_most=True,
        ),
        _ratio_target(
            "cached GET p99, paced, <= 2x the ceiling's paced",
            _over(p99(cached_paced), p99(ceiling_paced)),
            2.0,
            at_most=True,
        ),
        _ratio_target("cached GET throughput >= 0.7x the seed recipe", _over(rps(cached), rps(seed)), 0.7),
        _ratio_target("uncached GET >= 0.45x the framework ceiling", _over(rps(uncached), ceiling), 0.45),
        _ratio_target("POST >= 0.3x the framework ceiling", _over(rps(post), ceiling), 0.3),
        _ratio_target(
            "GET /auth/me CPU per request <= the api's uncached read", _over(cpu(me), cpu(uncached)), 1.0, at_most=True
        ),
        *cpu_targets(measurements, uncached),
        Target("zero errors in every scenario", failed == 0, f"{failed} errors"),
    ]


# Issue 31: CPU per request as a multiple of the framework ceiling's in the same run, at most.
CPU_LIMITS = (
    ("post", "POST /api/users", 2.5),
    ("patch", "PATCH /api/users/<id>", 3.0),
    ("refresh", "POST /auth/refresh", 5.0),
    ("get_uncached", "uncached GET /api/users/<id>", 1.6),
)


def cpu_targets(measurements: list[Measurement], uncached: Measurement | None) -> list[Target]:
    """Issue 31's targets: what a request costs in CPU, as a multiple of the ceiling's."""
    ceiling = ceiling_cpu_ms(measurements)
    found = {key: find(measurements, key) for key, _, _ in CPU_LIMITS} | {"get_uncached": uncached}
    return [
        _ratio_target(
            f"{title} CPU per request <= {limit:g}x the framework ceiling's (issue 31)",
            _over(cpu(found[key]), ceiling),
            limit,
            at_most=True,
        )
        for key, title, limit in CPU_LIMITS
    ]


def comparison(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Each scenario of an earlier run (``bench/results/before.json``) next to this run's, as ratios
    to each run's own framework ceiling (absolute figures of two runs are not comparable here)."""
    then = [Measurement(**m) for m in before["measurements"]]
    now = [Measurement(**m) for m in after["measurements"]]
    then_ceiling, now_ceiling = ceiling_rps(then), ceiling_rps(now)
    lines = [
        f"**Before and after** (before: {before['machine']['date']}, {before.get('label', 'an earlier run')}):",
        "",
        "| Scenario | Rows | Before x ceiling | After x ceiling | Before CPU ms/request | After CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in now:
        if m.key == CEILING or (m.key in SCALE_KEYS and m.rows != after["main_rows"]):
            continue
        old = find(then, m.key, m.rows)
        if old is None:
            continue
        cells = [m.title, f"{m.rows:,}" if m.rows else "", ratio(old, then_ceiling), ratio(m, now_ceiling)]
        cells += [old.cpu_ms, m.cpu_ms]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return [*lines, ""]


def _mb(value: int) -> str:
    return f"{value / 1e6:.0f} MB"


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def markdown(data: dict[str, Any]) -> str:
    measurements = [Measurement(**m) for m in data["measurements"]]
    ceiling = ceiling_rps(measurements)
    ceiling_cpu = ceiling_cpu_ms(measurements)
    machine = data["machine"]
    lines = [
        f"Taken {machine['date']} on {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Docker {machine['docker']}, load average {machine['load_average_at_start']} at the start; "
        f"wrk with {data['config']['threads']} threads and {data['config']['connections']} connections on the "
        f"same machine, {data['config']['duration']} s per scenario after {data['config']['warmup']} s of warm-up, "
        f"sent to {data['config'].get('load_through', 'the published ports')}; "
        "x ceiling is the ratio to the mean of the two framework-ceiling runs; CPU ms/request is the CPU time "
        "of the containers on the request's path (nginx, the service, Redis, Postgres; for the ceiling its own "
        "nginx and app), which other load on the machine disturbs far less, and x ceiling (CPU) the ratio "
        "requests/s would have where CPU is the limit.",
        "",
        "| Scenario | Rows | Connections | Requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | Errors | x ceiling "
        "| CPU ms/request | x ceiling (CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        if m.key in SCALE_KEYS and m.rows != data["main_rows"]:
            continue
        r = ratio(m, ceiling)
        rows = f"{m.rows:,}" if m.rows else ""
        p999 = "" if m.p999_ms is None else m.p999_ms
        cells = [m.title, rows, m.connections, f"{m.rps:,.0f}", m.p50_ms, m.p90_ms, m.p99_ms, p999, m.errors]
        cpu_r = cpu_ratio(m, ceiling_cpu)
        cells += ["" if r is None else f"{r:.2f}", "" if m.cpu_ms is None else m.cpu_ms]
        cells.append("" if cpu_r is None else f"{cpu_r:.2f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    argon2 = data.get("argon2")
    if argon2:
        lines += [
            "",
            f"Argon2id ({argon2['memory_kib']} KiB, t={argon2['time_cost']}, p={argon2['parallelism']}): "
            f"{argon2['hashes_per_second_per_core']} hashes/s on one core; login does one verification.",
        ]
    lines += ["", "**Scale** (cache off: every read is a Postgres query; requests/s, p99 in brackets):", ""]
    lines += ["| Rows | GET /api/users/<id> | list, first page | list, 90% deep |", "|---:|---:|---:|---:|"]
    for rows in data["scale_rows"]:
        cells = []
        for key in SCALE_KEYS:
            m = find(measurements, key, rows)
            cells.append(f"{m.rps:,.0f} ({m.p99_ms} ms)" if m else "")
        lines.append(f"| {rows:,} | {' | '.join(cells)} |")
    footprint = data["footprint"]
    lines += ["", "**Footprint**", ""]
    lines.append(f"- warm `make up` to ready: {footprint['warm_up_seconds']:.1f} s")
    lines.append("- images: " + ", ".join(f"`{name}` {_mb(size)}" for name, size in footprint["image_sizes"].items()))
    lines.append(
        "- idle memory: " + ", ".join(f"{name} {_mib(size)}" for name, size in sorted(footprint["idle_memory"].items()))
    )
    if footprint.get("idle_cpu"):
        lines.append("- " + idle_summary(IdleCpu(**footprint["idle_cpu"])))
    if data.get("before"):
        lines += ["", *comparison(data["before"], data)]
    lines += ["", "**Targets** (issues 16, 18 and 31; ratios within this run)", ""]
    for t in data["targets"]:
        lines.append(f"- {'met' if t['met'] else 'MISSED'}: {t['description']} ({t['measured']})")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> bool:
    """Replace the text between the bench markers of ``readme``; False when the markers are missing."""
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda _: f"{README_BEGIN}\n{table}{README_END}", text), encoding="utf-8")
    return True


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measurements = [Measurement(**m) for m in data["measurements"]]
    ceiling = ceiling_rps(measurements)
    main = [m for m in measurements if m.key not in SCALE_KEYS or m.rows == data["main_rows"]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    names = [m.title for m in main][::-1]
    values = [m.rps for m in main][::-1]
    bars = left.barh(names, values, color=["#d62728" if m.errors else "#1f77b4" for m in main][::-1])
    for bar, m in zip(bars, main[::-1], strict=True):
        r = ratio(m, ceiling)
        note = f" {m.rps:,.0f}/s" + (f"  {r:.2f}x" if r is not None and m.key != "nginx_healthz" else "")
        left.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, note, va="center", fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("requests/s (log scale); ratio to the framework ceiling")
    left.tick_params(axis="y", labelsize=8)
    rows = data["scale_rows"]
    width = 0.8 / len(SCALE_KEYS)
    for i, key in enumerate(SCALE_KEYS):
        series = [find(measurements, key, r) for r in rows]
        right.bar(
            [x + i * width for x in range(len(rows))],
            [m.rps if m else 0 for m in series],
            width,
            label=key.replace("_uncached", "").replace("_", " "),
        )
    right.set_xticks([x + width for x in range(len(rows))], [f"{r:,} rows" for r in rows])
    right.set_ylabel("requests/s (cache off)")
    right.set_title("Scale: cost does not grow with the table")
    right.legend(fontsize=8)
    figure.suptitle(f"make bench, {data['machine']['date']}, {data['machine']['cores']} cores")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(results_dir: Path, data: dict[str, Any]) -> tuple[Path, Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / "latest.json"
    md_path = results_dir / "latest.md"
    png_path = results_dir / "latest.png"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(data), encoding="utf-8")
    chart(data, png_path)
    return json_path, md_path, png_path


def as_dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]
