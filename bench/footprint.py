"""What the stack costs at rest: image sizes, idle memory and CPU per container, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import cpu
from bench.config import BenchConfig, log
from bench.stack import BenchStack, StackError

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


# At rest, the whole stack (every container, plus what Docker's daemons spend on it) must cost at
# most this much of the machine: about 3% of one core (issue 27).
IDLE_TARGET_MS = 60.0
# Each window at rest (stack down, then up) spans every health check's interval (30 and 60 s).
IDLE_SECONDS = 60
SETTLE_SECONDS = 10  # after `make up`: the workers' first imports and the first requests' work end


@dataclass(frozen=True)
class IdleCpu:
    """CPU milliseconds per second spent with no traffic, over ``seconds``.

    ``containers``: each container's own (its cgroup: its processes and the health checks Docker runs
    in it); ``shims``: the project's containerd shims and the runc processes they ran (every health
    check is one ``runc exec``); ``daemons``: dockerd and containerd, which serve every project on the
    engine; ``machine_up``/``machine_down``: the whole machine (/proc/stat, every core) with the stack
    up, and with it down just before. Their difference is what the stack costs the machine, Docker
    included; on a busy machine only the per-container figures mean much."""

    seconds: float
    containers: dict[str, float]
    shims: float
    daemons: dict[str, float]
    machine_up: float
    machine_down: float | None = None

    @property
    def stack(self) -> float | None:
        return None if self.machine_down is None else round(self.machine_up - self.machine_down, 1)

    @property
    def attributed(self) -> float:
        """What the stack's own containers and shims spent (the daemons' share not included)."""
        return round(sum(self.containers.values()) + self.shims, 1)


def busy_cpu_ms() -> float:
    """CPU milliseconds the whole machine has spent busy since boot (/proc/stat, every core)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) * 1000 / os.sysconf("SC_CLK_TCK")


def machine_at_rest(seconds: float) -> float:
    """The whole machine's busy CPU milliseconds per second over ``seconds``."""
    before, started = busy_cpu_ms(), time.monotonic()
    time.sleep(seconds)
    return round((busy_cpu_ms() - before) / (time.monotonic() - started), 1)


def process_cpu_ms(container_ids: list[str]) -> dict[str, float]:
    """Cumulative CPU milliseconds of dockerd, containerd and (under ``shims``) the containerd shims of
    ``container_ids`` (full ids), each with its reaped children (a shim's: the runc processes it ran)."""
    spent = {"dockerd": 0.0, "containerd": 0.0, "shims": 0.0}
    ticks = os.sysconf("SC_CLK_TCK")
    wanted = set(container_ids)
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or gone meanwhile
        program = os.path.basename(command[0].decode(errors="replace"))
        ms = sum(int(x) for x in fields[11:15]) * 1000 / ticks  # utime, stime, cutime, cstime
        if program in ("dockerd", "containerd"):
            spent[program] += ms
        elif program.startswith("containerd-shim") and b"-id" in command:
            index = command.index(b"-id") + 1
            if index < len(command) and command[index].decode() in wanted:
                spent["shims"] += ms
    return spent


def idle_cpu(stack: BenchStack, seconds: float, machine_down: float | None = None) -> IdleCpu:
    """Where the stack's CPU goes with no traffic, over ``seconds`` (see :class:`IdleCpu`); empty per
    container where the cgroup files cannot be read."""
    names = {c["ID"]: c["Name"].removeprefix(stack.config.project + "-") for c in stack.containers()}
    full_ids = stack.compose("ps", "--quiet").split()
    before, processes, machine = cpu.snapshot(full_ids), process_cpu_ms(full_ids), busy_cpu_ms()
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after, processes_after, machine_after = cpu.snapshot(full_ids), process_cpu_ms(full_ids), busy_cpu_ms()
    rates = {name: round((processes_after[name] - processes[name]) / elapsed, 1) for name in processes}
    return IdleCpu(
        seconds=round(elapsed),
        containers=per_second(before, after, elapsed, names),
        shims=rates.pop("shims"),
        daemons=rates,
        machine_up=round((machine_after - machine) / elapsed, 1),
        machine_down=machine_down,
    )


def at_rest(stack: BenchStack, seconds: float) -> tuple[float, IdleCpu]:
    """From the product stack down (volumes kept): the machine at rest without it, a warm `make up`
    (its seconds), then the stack at rest."""
    log(f"the machine at rest without the stack ({seconds:.0f} s)")
    down = machine_at_rest(seconds)
    warm = stack.make_up()
    log(f"warm make up: {warm:.1f} s; then the stack at rest ({SETTLE_SECONDS} + {seconds:.0f} s)")
    time.sleep(SETTLE_SECONDS)
    return warm, idle_cpu(stack, seconds, machine_down=down)


def idle_summary(idle: IdleCpu) -> str:
    """One line: per container, the shims, the daemons, the whole machine, and the target."""
    containers = ", ".join(f"{name} {ms:g}" for name, ms in sorted(idle.containers.items()))
    line = (
        f"idle CPU, ms per second over {idle.seconds:g} s at rest (no traffic; health checks included): "
        f"{containers}; {sum(idle.containers.values()):.1f} for the containers, {idle.shims:g} for their "
        f"containerd shims and the runc processes they ran (each health check is one `runc exec`), "
        f"{idle.attributed:g} in all; dockerd {idle.daemons.get('dockerd', 0):g} and containerd "
        f"{idle.daemons.get('containerd', 0):g} (the whole engine's, every project's); whole machine "
        f"{idle.machine_up:g} with the stack up"
    )
    if idle.stack is None:
        return line
    line += f" and {idle.machine_down:g} down"
    if idle.stack < 0:  # the machine's other work changed between the two windows
        return line + ": the machine was not quiet, no verdict on the target"
    verdict = "met" if idle.stack <= IDLE_TARGET_MS else "MISSED"
    return (
        line + f": the stack costs the machine {idle.stack:g} ms/s "
        f"(target <= {IDLE_TARGET_MS:g}: {verdict}; meaningful on a quiet machine only)"
    )


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


def main() -> int:
    """`make bench-idle`: the stack's CPU at rest alone, against IDLE_TARGET_MS (the benchmark's own
    project and ports; about four minutes). Exit 1 when the target is missed."""
    stack = BenchStack(BenchConfig.from_env())
    try:
        log("building images; make up (first start, initialises the database)")
        stack.build(references=False)
        stack.down()
        stack.make_up()
        stack.stop_product()
        _, idle = at_rest(stack, IDLE_SECONDS)
    except StackError as error:
        print(f"[bench] failed: {error}", file=sys.stderr)
        return 1
    finally:
        stack.down()
    print(idle_summary(idle))
    return 0 if idle.stack is not None and 0 <= idle.stack <= IDLE_TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
