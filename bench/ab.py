"""`make bench-ab`: an interleaved A/B of two builds of the services, on chosen scenarios.

``make bench-ab A=TAG_A B=TAG_B SCENARIOS="post patch"``: the api and auth images tagged ``TAG_A``
and ``TAG_B`` (built beforehand in each checkout: ``WHARF_TAG=x scripts/compose.sh build
api-migrate dev-secrets``, the services that build those images) take turns on the benchmark's
compose project, A, B, A, B (``BENCH_AB_ROUNDS`` rounds, 2 by default), so that load from
elsewhere on the machine weighs on both alike. Each turn runs the
framework ceiling, each scenario as `make bench` runs it (``BENCH_DURATION`` seconds, 8 here,
after a warm-up), then the ceiling again, and reads the CPU time per request from the containers'
cgroups; a scenario is set against the mean of its turn's two ceiling runs (the load of a shared
machine drifts within a turn too). The api
runs with ``CACHE_TTL_SECONDS=0`` (reads from Postgres; writes still replace the stamps) unless a
cached scenario is asked for. Prints one line per run and, at the end, each scenario's CPU per
request as a multiple of the ceiling's in the same turn, with the load average of the machine.
Everything else (the references, nginx, Postgres, Redis) keeps the images of ``TAG_A``. Leaves
the project running (``docker compose -p wharf-bench down -v`` removes it; ``BENCH_PROJECT`` names another).

A build may also be a setting: ``TAG,NAME=VALUE[,NAME=VALUE...]`` runs the images of ``TAG`` with
those variables for the api and auth (``B="dev,GUNICORN_WORKERS=2"``), and ``B`` may name several
builds, separated by spaces, each taking its turn (``B="dev,GUNICORN_WORKERS=2 next"``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench import scenarios, seed
from bench.config import BenchConfig, ConfigError
from bench.runner import Runner, log
from bench.scenarios import CEILING, DataFiles, Scenario
from bench.stack import PRODUCT_FILES, BenchStack

DEFAULT_SCENARIOS = ["post", "patch", "refresh", "get_uncached", "me"]
CACHED = {"get_cached", "list_first_cached", "list_deep_cached", "mixed"}
REFRESH_TOKENS_PER_RUN = 12_000


def _build(spec: str) -> tuple[str, dict[str, str]]:
    """``TAG[,NAME=VALUE...]``: the image tag and the variables the api and auth run with."""
    tag, *settings = spec.split(",")
    pairs = [setting.partition("=") for setting in settings]
    if not tag or any(not name or not sep for name, sep, _ in pairs):
        raise ConfigError(f"a build is TAG or TAG,NAME=VALUE[,NAME=VALUE...] (got {spec!r})")
    return tag, {name: value for name, _, value in pairs}


def _switch(stack: BenchStack, spec: str, cache_ttl: int) -> None:
    """The api and auth replicas recreated from the build ``spec`` (:func:`_build`), then routed by nginx."""
    tag, settings = _build(spec)
    env = {**settings, "WHARF_TAG": tag, "CACHE_TTL_SECONDS": str(cache_ttl)}
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "240", "--no-deps", "api", "auth", env=env)
    stack.wait_routed("/api/healthz")
    stack.wait_routed("/auth/healthz")


def _files(stack: BenchStack, work: Path, account: seed.Account) -> DataFiles:
    return DataFiles(
        tokens=seed.write_lines(work / "access.tokens", account.access_tokens),
        cached_ids=seed.write_lines(work / "cached.ids", seed.sample_ids(stack, 100)),
        owned_ids=seed.write_lines(work / "owned.ids", seed.sample_ids(stack, seed.OWNED_ROWS, owner=account.id)),
        refresh_tokens=work / "refresh.tokens",  # written afresh before each refresh run
        login_body=seed.write_lines(work / "login.json", [f'{{"email":"{account.email}","password":"x"}}']),
        healthz=seed.write_lines(work / "healthz.paths", ["/healthz"]),
        seed_ids=work / "none",
        me=seed.write_lines(work / "me.paths", ["/auth/me"]),
    )


def _chosen(config: BenchConfig, files: DataFiles, work: Path, stack: BenchStack, keys: list[str]) -> list[Scenario]:
    rows = config.main_rows
    first = seed.write_lines(work / "first.paths", ["/api/users"])
    deep = seed.write_lines(work / "deep.paths", [f"/api/users?cursor={seed.cursor_at(stack, 0.9)}"])
    ids = seed.write_lines(work / "uncached.ids", seed.sample_ids(stack, 1000))
    known = {
        s.key: s
        for s in [
            *scenarios.cached(config, files, rows, first, deep),
            *scenarios.uncached(config, files, rows, ids, first, deep),
            *scenarios.tails(config, files, 2000.0),
            scenarios.mixed(config, files, rows, first, 2000.0),
        ]
    }
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise ConfigError(f"unknown scenarios {unknown}; known: {sorted(known)}")
    return [known[key] for key in keys]


def _load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def compare(tags: list[str], keys: list[str]) -> list[dict[str, object]]:
    config = dataclasses.replace(BenchConfig.from_env(), duration=int(os.environ.get("BENCH_DURATION") or 8))
    rounds = int(os.environ.get("BENCH_AB_ROUNDS") or 2)
    stack = BenchStack(config)
    stack.env["WHARF_TAG"] = _build(tags[0])[0]
    cache_ttl = 60 if CACHED & set(keys) else 0
    log(f"starting {config.project} with the images of {tags[0]}")
    # auth-mail is not on any measured path (its health check is slow to pass on a busy machine).
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "300", "nginx", "api", "auth", files=PRODUCT_FILES)
    stack.up_references()
    config = dataclasses.replace(config, **stack.load_urls())
    work = Path(tempfile.mkdtemp(prefix="wharf-ab-"))
    account = seed.account(stack, "ab@bench.example", logins=config.threads)
    seed.grow_users(stack, config.main_rows, account.id)
    files = _files(stack, work, account)
    chosen = _chosen(config, files, work, stack, keys)
    ceiling = next(s for s in scenarios.references(config, files) if s.key == CEILING)
    runner = Runner(config, stack, total=rounds * len(tags) * (len(chosen) + 2))
    results: list[dict[str, object]] = []
    for turn in range(rounds):
        for tag in tags:
            _switch(stack, tag, cache_ttl)
            for scenario in [ceiling, *chosen, ceiling]:
                if scenario.key == "refresh":
                    fresh = seed.refresh_tokens(stack, account.id, REFRESH_TOKENS_PER_RUN)
                    seed.write_lines(files.refresh_tokens, fresh)
                load = _load_average()
                m = runner.run(scenario)
                results.append({"turn": turn, "tag": tag, "key": scenario.key, "cpu_ms": m.cpu_ms, "rps": m.rps,
                                "p99_ms": m.p99_ms, "errors": m.errors, "error_detail": m.error_detail,
                                "by_service": m.cpu_by_service, "load": load})  # fmt: skip
    return results


def summary(results: list[dict[str, object]], tags: list[str]) -> str:
    """Each scenario's CPU per request over the mean of the ceiling's runs of the same turn, per tag
    (the mean of the turns, each turn's, and the mean CPU ms per request)."""
    lines = ["| Scenario | " + " | ".join(tags) + " |", "|---|" + "---:|" * len(tags)]
    keys = list(dict.fromkeys(str(r["key"]) for r in results if r["key"] != CEILING))
    for key in keys:
        cells = []
        for tag in tags:
            runs = [r for r in results if r["key"] == key and r["tag"] == tag and r["cpu_ms"]]
            ratios = [float(r["cpu_ms"]) / _turn_ceiling(results, tag, r["turn"]) for r in runs]  # type: ignore[arg-type]
            each = ", ".join(f"{x:.2f}" for x in ratios)
            cpu_ms = statistics.mean(float(r["cpu_ms"]) for r in runs) if runs else 0.0  # type: ignore[arg-type]
            cells.append(f"{statistics.mean(ratios):.2f}x ({each}; {cpu_ms:.3f} ms)" if ratios else "")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _turn_ceiling(results: list[dict[str, object]], tag: str, turn: object) -> float:
    """The mean CPU per request of the ceiling's runs in ``tag``'s turn ``turn``."""
    runs = [r for r in results if r["key"] == CEILING and (r["tag"], r["turn"]) == (tag, turn) and r["cpu_ms"]]
    return statistics.mean(float(r["cpu_ms"]) for r in runs)  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    # A, then B's builds (several when B names more than one), then the scenarios after "--".
    split = argv.index("--") if "--" in argv else 2
    tags, keys = argv[:split], argv[split + 1 :] if "--" in argv else argv[split:]
    keys = keys or DEFAULT_SCENARIOS
    try:
        results = compare(tags, keys)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 78
    for r in results:
        print(json.dumps(r))
    print(summary(results, tags))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
