"""`make bench`: bring the stack up, seed it, drive load through nginx, report.

Run from the repository root with the test virtualenv: ``.venv/bin/python -m bench``. Settings are
``BENCH_*`` environment variables (bench/config.py); results land in bench/results/ and bench/README.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import footprint, report, scenarios, seed, wrk
from bench.config import README, ROOT, BenchConfig, ConfigError, log
from bench.runner import Runner
from bench.scenarios import DataFiles
from bench.stack import BenchStack, StackError


def list_paths(work: Path, stack: BenchStack, name: str) -> tuple[Path, Path]:
    first = seed.write_lines(work / f"{name}-first.paths", ["/api/users"])
    deep = seed.write_lines(work / f"{name}-deep.paths", [f"/api/users?cursor={seed.cursor_at(stack, 0.9)}"])
    return first, deep


def bring_up(stack: BenchStack) -> dict[str, object]:
    log("building images")
    stack.build()
    stack.down()
    log("make up (first start, initialises the database)")
    first = stack.make_up()
    stack.stop_product()
    warm, idle = footprint.at_rest(stack, footprint.IDLE_SECONDS)
    log(f"warm make up: {warm:.1f} s to ready (first: {first:.1f} s)")
    log(footprint.idle_summary(idle))
    memory = footprint.idle_memory(stack)
    tag = os.environ.get("WHARF_TAG", "dev")
    prefix = os.environ.get("WHARF_IMAGE_PREFIX", "wharf")
    images = footprint.image_sizes([f"{prefix}/{name}:{tag}" for name in ("api", "auth", "nginx")])
    stack.up_references()
    return {
        "warm_up_seconds": round(warm, 1),
        "first_up_seconds": round(first, 1),
        "image_sizes": images,
        "idle_memory": memory,
        "idle_cpu": dataclasses.asdict(idle),
    }


def main() -> int:
    try:
        config = BenchConfig.from_env()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 78
    stack = BenchStack(config)
    machine = footprint.machine()
    try:
        return _run(config, stack, machine)
    except (StackError, wrk.WrkError, RuntimeError) as error:
        print(f"[bench] failed: {error}", file=sys.stderr)
        return 1
    finally:
        if not config.keep_stack:
            try:
                stack.down()
            except StackError as error:
                print(f"[bench] could not remove the stack: {error}", file=sys.stderr)


def _run(config: BenchConfig, stack: BenchStack, machine: dict[str, object]) -> int:
    started = time.monotonic()
    foot = bring_up(stack)
    config = dataclasses.replace(config, **stack.load_urls())
    load_through = "the nginx containers' own addresses" if config.edge_url else "the published ports"
    log(f"load goes to {config.load_url} and {config.ceiling_load_url} ({load_through})")
    argon2 = footprint.argon2_rate(stack)
    log(f"argon2id: {argon2['hashes_per_second_per_core']} hashes/s on one core")

    work = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    rows = config.main_rows
    log(f"seeding: account, {config.refresh_tokens:,} refresh tokens, {rows:,} users")
    account = seed.account(stack, "bench@bench.example", logins=config.threads)
    seed.grow_users(stack, rows, account.id)
    files = DataFiles(
        tokens=seed.write_lines(work / "access.tokens", account.access_tokens),
        cached_ids=seed.write_lines(work / "cached.ids", seed.sample_ids(stack, 100)),
        owned_ids=seed.write_lines(work / "owned.ids", seed.sample_ids(stack, seed.OWNED_ROWS, owner=account.id)),
        refresh_tokens=seed.write_lines(
            work / "refresh.tokens", seed.refresh_tokens(stack, account.id, config.refresh_tokens)
        ),
        login_body=seed.write_lines(
            work / "login.json", [f'{{"email":"{account.email}","password":"{seed.PASSWORD}"}}']
        ),
        healthz=seed.write_lines(work / "healthz.paths", ["/healthz"]),
        seed_ids=seed.write_lines(work / "seed-recipe.ids", seed.recipe_ids(stack)),
        me=seed.write_lines(work / "me.paths", ["/auth/me"]),
    )
    first, deep = list_paths(work, stack, "cached")
    pages = seed.write_lines(work / "mixed.paths", [*first.read_text().split(), *deep.read_text().split()])
    references = scenarios.references(config, files)
    cached = scenarios.cached(config, files, rows, first, deep)
    tails_count = len(scenarios.tails(config, files, 1.0))
    total = len(references) + tails_count + len(cached) + 1 + 3 * len(config.scale_rows) + 1
    runner = Runner(config, stack, total=total)
    for scenario in references:
        runner.run(scenario)
    ceiling = report.ceiling_rps(runner.measurements) or 1.0
    for scenario in [
        *scenarios.tails(config, files, ceiling),
        *cached,
        scenarios.mixed(config, files, rows, pages, ceiling),
    ]:
        runner.run(scenario)

    log("api replicas restarted with CACHE_TTL_SECONDS=0 (reads bypass the cache) for the scale runs")
    stack.set_cache_ttl(0)
    seed.reset_users(stack)
    for size in config.scale_rows:
        seed.grow_users(stack, size, account.id)
        ids = seed.write_lines(work / f"uncached-{size}.ids", seed.sample_ids(stack, 1000))
        first, deep = list_paths(work, stack, f"uncached-{size}")
        for scenario in scenarios.uncached(config, files, size, ids, first, deep):
            runner.run(scenario)

    runner.run(scenarios.ceiling_again(config, files))
    measurements = runner.measurements
    data = {
        "machine": machine,
        "config": {
            "duration": config.duration,
            "warmup": config.warmup,
            "connections": config.connections,
            "threads": config.threads,
            "load_through": load_through,
        },
        "main_rows": rows,
        "scale_rows": list(config.scale_rows),
        "footprint": foot,
        "argon2": argon2,
        "measurements": report.as_dicts(measurements),
        "targets": report.as_dicts(report.targets(measurements)),
    }
    before = config.results_dir / "before.json"  # an earlier run kept for comparison, if any
    if before.exists():
        data["before"] = json.loads(before.read_text(encoding="utf-8"))
    json_path, md_path, png_path = report.write(config.results_dir, data)
    log(f"results: {json_path}, {md_path}, {png_path}")
    failed = sum(m.errors for m in measurements)
    if config.update_readme and not failed:
        updated = report.update_readme(README, md_path.read_text("utf-8"))
        log(f"{README.relative_to(ROOT)}: {'results updated' if updated else 'no bench markers, left alone'}")
    print(md_path.read_text(encoding="utf-8"))
    log(f"done in {time.monotonic() - started:.0f} s")
    if failed:
        log(f"FAILED: {failed} requests got an error (non-2xx/3xx or socket error)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
