"""What the stack costs at rest: image sizes, idle memory and CPU per container, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from datetime import UTC, datetime

from bench import cpu
from bench.stack import BenchStack

_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}

# Run inside an auth container: the Argon2id parameters auth is configured with, one thread.
ARGON2_PROBE = """
import time
from wharf_auth.passwords import make_hasher
from wharf_auth.settings import AuthSettings
from wharf_common.settings import load_settings
s = load_settings(AuthSettings)
hasher = make_hasher(s.argon2_memory_kib, s.argon2_time_cost)
hasher.hash("warm-up password of reasonable length")
n, started = 0, time.perf_counter()
while time.perf_counter() - started < 3:
    hasher.hash("benchmark password of reasonable length")
    n += 1
print(n / (time.perf_counter() - started), s.argon2_memory_kib, s.argon2_time_cost, 1)
"""


def parse_size(text: str) -> int:
    """Bytes of a docker size such as ``45.2MiB`` or ``1.5GB``."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]?i?B)\s*", text, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def idle_memory(stack: BenchStack) -> dict[str, int]:
    """Bytes of memory each running container of the project uses (``docker stats``)."""
    names = sorted(c["Name"] for c in stack.containers())
    if not names:
        return {}
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", *names],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    usage = {}
    for line in out.splitlines():
        name, _, mem = line.partition("\t")
        usage[name.removeprefix(stack.config.project + "-")] = parse_size(mem.split("/")[0])
    return usage


WHOLE_MACHINE = "whole machine"


def idle_cpu(stack: BenchStack, seconds: float) -> dict[str, float]:
    """Milliseconds of CPU per second each running container of the project spends with no traffic
    (its health checks, timers and background threads), over ``seconds``; empty where the cgroup
    files cannot be read."""
    names = {c["ID"]: c["Name"].removeprefix(stack.config.project + "-") for c in stack.containers()}
    full_ids = stack.compose("ps", "--quiet").split()
    before, machine_before = cpu.snapshot(full_ids), busy_cpu_ms()
    time.sleep(seconds)
    after, machine_after = cpu.snapshot(full_ids), busy_cpu_ms()
    usage = per_second(before, after, seconds, names)
    if usage:
        # Docker's own daemons run each health check (an exec in the container): part of the cost.
        usage[WHOLE_MACHINE] = round((machine_after - machine_before) / seconds, 1)
    return usage


def busy_cpu_ms() -> float:
    """CPU milliseconds the whole machine has spent busy since boot (/proc/stat, every core)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) * 1000 / os.sysconf("SC_CLK_TCK")


def per_second(
    before: dict[str, int] | None, after: dict[str, int] | None, seconds: float, names: dict[str, str]
) -> dict[str, float]:
    """CPU ms per second by container name, from two cgroup snapshots (full ids) and short id -> name."""
    if before is None or after is None:
        return {}
    usage = {}
    for full_id, spent in after.items():
        name = next((n for short, n in names.items() if full_id.startswith(short)), full_id[:12])
        usage[name] = round((spent - before.get(full_id, spent)) / 1e6 / seconds, 1)
    return usage


def image_sizes(names: list[str]) -> dict[str, int]:
    sizes = {}
    for name in names:
        out = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", name], capture_output=True, text=True, check=False
        )
        if out.returncode == 0:
            sizes[name] = int(out.stdout.strip())
    return sizes


def argon2_rate(stack: BenchStack) -> dict[str, float]:
    """Argon2id hashes per second on one core, with auth's configured parameters."""
    rate, memory_kib, time_cost, parallelism = stack.docker_exec("auth", "python", "-", stdin=ARGON2_PROBE).split()
    return {
        "hashes_per_second_per_core": round(float(rate), 1),
        "memory_kib": int(memory_kib),
        "time_cost": int(time_cost),
        "parallelism": int(parallelism),
    }


def machine() -> dict[str, str | int]:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    memory = 0
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            memory = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal"))) * 1024
    except (OSError, StopIteration, ValueError):
        pass
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu or platform.processor() or "unknown",
        "cores": os.cpu_count() or 0,
        "memory_gib": round(memory / 1024**3),
        "kernel": platform.release(),
        "docker": docker or "unknown",
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
