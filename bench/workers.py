"""`make bench-workers`: the worker-model sweep behind the gunicorn defaults (bench/README.md).

For each ``REPLICASxWORKERSxTHREADS`` given (threads 1: sync workers, more: gthread), the benchmark's
compose project is (re)started with those settings for the api, auth and the framework ceiling
alike; then the ceiling, the authenticated cached GET and GET /auth/me are driven at 64 and at 8
connections as `make bench` drives a scenario (2 s warm-up, 8 s measured), with each replica's
memory after start. One JSON line per run on stdout (and `make bench`'s progress lines). Leaves the
project running (``make bench`` or ``docker compose -p wharf-bench down -v`` removes it).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import scenarios, seed
from bench.config import BenchConfig
from bench.runner import Runner
from bench.scenarios import Scenario
from bench.stack import BenchStack

DEFAULT_MODELS = ["2x2x4", "2x2x2", "2x2x1", "2x3x1", "2x4x1", "1x4x1", "4x1x1"]
ROWS = 10_000


def _memory(stack: BenchStack) -> dict[str, str]:
    names = [c["Name"] for c in stack.containers() if c["Service"] in ("api", "auth")]
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *names],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def sweep(models: list[str]) -> None:
    config = dataclasses.replace(BenchConfig.from_env(), duration=8)
    stack = BenchStack(config)
    stack.build()
    work = Path(tempfile.mkdtemp(prefix="wharf-workers-"))
    ids: Path | None = None
    for model in models:
        replicas, workers, threads = (int(part) for part in model.split("x"))
        settings = {"API_REPLICAS": str(replicas), "AUTH_REPLICAS": str(replicas)}
        settings |= {"GUNICORN_WORKERS": str(workers), "GUNICORN_THREADS": str(threads)}
        stack.env.update(settings)
        stack.compose("up", "--detach", "--wait", "--wait-timeout", "240", "--remove-orphans")
        stack.wait_routed("/api/healthz")
        urls = dataclasses.replace(config, **stack.load_urls())
        runner = Runner(urls, stack, total=6)
        account = seed.account(stack, "workers@bench.example", logins=config.threads)
        if ids is None:
            seed.grow_users(stack, ROWS, account.id)
            ids = seed.write_lines(work / "ids", seed.sample_ids(stack, 100))
        tokens = seed.write_lines(work / "tokens", account.access_tokens)
        me = seed.write_lines(work / "me", ["/auth/me"])
        print(json.dumps({"model": model, "memory": _memory(stack)}), flush=True)
        get = {"mode": "get", "data": str(ids), "tokens": str(tokens)}
        targets = [
            Scenario(scenarios.CEILING, "ceiling", urls.ceiling_load_url, get),
            Scenario("get_cached", "cached", urls.load_url, get),
            Scenario("me", "me", urls.load_url, {"mode": "paths", "data": str(me), "tokens": str(tokens)}),
        ]
        for target in targets:
            for connections in (64, 8):
                m = runner.run(dataclasses.replace(target, connections=connections))
                row = {"model": model, "target": target.title, "connections": connections, "rps": round(m.rps)}
                row |= {"p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "p999_ms": m.p999_ms, "cpu_ms": m.cpu_ms}
                print(json.dumps({**row, "errors": m.errors}), flush=True)


if __name__ == "__main__":
    sweep(sys.argv[1:] or DEFAULT_MODELS)
