"""`make bench-workers`: the worker-model sweep behind the gunicorn defaults (bench/README.md).

For each ``REPLICASxWORKERSxTHREADS`` given (threads 1: sync workers, more: gthread), the benchmark's
compose project is (re)started with those settings for the api, auth and the framework ceiling
alike; then the ceiling, the authenticated cached GET and GET /auth/me are driven at 64 and at 8
connections (2 s warm-up, 8 s measured), with each replica's memory after start. One JSON line per
run on stdout. Leaves the project running (``make bench`` or ``docker compose -p wharf-bench down -v``
removes it).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import cpu, scenarios, seed, wrk
from bench.config import BenchConfig
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
    config = BenchConfig.from_env()
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
        account = seed.account(stack, "workers@bench.example", logins=config.threads)
        if ids is None:
            seed.grow_users(stack, ROWS, account.id)
            ids = seed.write_lines(work / "ids", seed.sample_ids(stack, 100))
        tokens = seed.write_lines(work / "tokens", account.access_tokens)
        me = seed.write_lines(work / "me", ["/auth/me"])
        print(json.dumps({"model": model, "memory": _memory(stack)}), flush=True)
        get = {"mode": "get", "data": str(ids), "tokens": str(tokens)}
        runs = [
            ("ceiling", urls.ceiling_load_url, scenarios.CEILING_PATH, get),
            ("cached", urls.load_url, scenarios.API_PATH, get),
            ("me", urls.load_url, scenarios.AUTH_PATH, {"mode": "paths", "data": str(me), "tokens": str(tokens)}),
        ]
        for target, url, path, options in runs:
            for connections in (64, 8):
                wrk.run(url, seconds=2, connections=connections, threads=config.threads, options=options)
                containers = stack.container_ids(path)
                before = cpu.snapshot(containers)
                result = wrk.run(url, seconds=8, connections=connections, threads=config.threads, options=options)
                row = {
                    "model": model,
                    "target": target,
                    "connections": connections,
                    "rps": round(result.rps),
                    "p50_ms": result.p50_ms,
                    "p99_ms": result.p99_ms,
                    "p999_ms": result.p999_ms,
                    "cpu_ms": cpu.ms_per_request(before, cpu.snapshot(containers), result.requests),
                    "errors": result.error_count,
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sweep(sys.argv[1:] or DEFAULT_MODELS)
