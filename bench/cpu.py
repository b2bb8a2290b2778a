"""CPU time the stack's containers spend per request: a figure that other load on the machine
disturbs far less than requests/s (contention makes requests wait, it barely makes them costlier)."""

from __future__ import annotations

from bench.cgroup import cpu_ns


def snapshot(container_ids: list[str]) -> dict[str, int] | None:
    """CPU nanoseconds by container, or None where the cgroup files cannot be read."""
    usage = {cid: cpu_ns(cid) for cid in container_ids}
    if not usage or any(v is None for v in usage.values()):
        return None
    return {cid: v for cid, v in usage.items() if v is not None}


def ms_per_request(before: dict[str, int] | None, after: dict[str, int] | None, requests: int) -> float | None:
    if before is None or after is None or not requests:
        return None
    spent = sum(after[cid] - before.get(cid, after[cid]) for cid in after)
    return round(spent / requests / 1e6, 3)


def by_service(
    services: dict[str, list[str]], before: dict[str, int] | None, after: dict[str, int] | None, requests: int
) -> dict[str, float] | None:
    """:func:`ms_per_request` of each service's containers (replicas summed): where the time went."""
    if before is None or after is None:
        return None
    spent = {
        name: ms_per_request({c: before[c] for c in ids}, {c: after[c] for c in ids}, requests)
        for name, ids in services.items()
    }
    return {name: ms for name, ms in spent.items() if ms is not None}
