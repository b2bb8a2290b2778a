"""A container's own counters, read from its cgroup (cgroup v1 cgroupfs, or v2 with systemd or cgroupfs):
no `docker stats` round trip, and the same figures Docker shows."""

from __future__ import annotations

from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _v2(container_id: str) -> Path | None:
    for path in (CGROUP / "system.slice" / f"docker-{container_id}.scope", CGROUP / "docker" / container_id):
        if (path / "cgroup.controllers").exists():
            return path
    return None


def _stat(path: Path) -> dict[str, int]:
    return {name: int(value) for name, value in (line.split() for line in path.read_text().splitlines())}


def cpu_ns(container_id: str) -> int | None:
    """Cumulative CPU nanoseconds of one container, or None where its cgroup cannot be read."""
    v1 = CGROUP / "cpuacct" / "docker" / container_id / "cpuacct.usage"
    if v1.exists():
        return int(v1.read_text())
    v2 = _v2(container_id)
    return _stat(v2 / "cpu.stat")["usage_usec"] * 1000 if v2 else None


def memory_bytes(container_id: str) -> int | None:
    """Memory in use as `docker stats` counts it (usage minus the inactive file cache), or None."""
    v1 = CGROUP / "memory" / "docker" / container_id
    if (v1 / "memory.usage_in_bytes").exists():
        usage = int((v1 / "memory.usage_in_bytes").read_text())
        return usage - _stat(v1 / "memory.stat").get("total_inactive_file", 0)
    v2 = _v2(container_id)
    if v2 is None:
        return None
    return int((v2 / "memory.current").read_text()) - _stat(v2 / "memory.stat").get("inactive_file", 0)
