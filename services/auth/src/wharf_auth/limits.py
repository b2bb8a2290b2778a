"""Login throttling: failures per account and per client address in Redis, with an in-process fallback.

Failures are counted in fixed windows that start at the first failure (``SET NX EX`` then ``INCR``).
Every failure is also counted in process memory, and while Redis errors the local counts decide, so
an outage neither opens the gate nor locks everyone out. A circuit breaker keeps a dead Redis from
costing a socket timeout on every sign-in: after a failure Redis is skipped (local counts only) for
a pause.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pybreaker
import redis

from wharf_common.cache import guarded, make_breaker

log = logging.getLogger(__name__)

PREFIX = "auth:login-failures:"
RECOVERY_PREFIX = "auth:recovery-requests:"
T = TypeVar("T")


def email_key(email: str) -> str:
    return "acct:" + hashlib.sha256(email.encode("utf-8")).hexdigest()


def ip_key(address: str) -> str:
    return "ip:" + address


@dataclass(frozen=True)
class Limit:
    key: str
    max_failures: int


class LocalCounter:
    """Fixed-window counters in this process (bounded; expired entries are dropped first)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _prune(self, now: float) -> None:
        for key in [k for k, (_, exp) in self._entries.items() if exp <= now]:
            del self._entries[key]
        while len(self._entries) >= self._max_entries:
            del self._entries[min(self._entries, key=lambda k: self._entries[k][1])]

    def incr(self, key: str, window: int) -> None:
        with self._lock:
            now = self._clock()
            count, expires = self._entries.get(key, (0, 0.0))
            if expires <= now:
                if len(self._entries) >= self._max_entries:
                    self._prune(now)
                count, expires = 0, now + window
            self._entries[key] = (count + 1, expires)

    def get(self, key: str) -> tuple[int, float]:
        """(count, seconds left in the window)."""
        with self._lock:
            now = self._clock()
            count, expires = self._entries.get(key, (0, 0.0))
            if expires <= now:
                return 0, 0.0
            return count, expires - now

    def reset(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class LoginLimiter:
    """Counts events (failed sign-ins; with another ``prefix``, requests for a recovery mail) per key."""

    def __init__(
        self,
        client: redis.Redis,
        window_seconds: int,
        *,
        local: LocalCounter | None = None,
        breaker: pybreaker.CircuitBreaker | None = None,
        prefix: str = PREFIX,
    ) -> None:
        self.redis = client
        self.window = window_seconds
        self.prefix = prefix
        self.local = local or LocalCounter()
        self.breaker = breaker or make_breaker()

    def _remote(self, operation: Callable[[], T], what: str) -> T | None:
        """``operation()`` against Redis, or ``None`` while Redis is failing (the local counts decide)."""
        return guarded(self.breaker, operation, None, f"login limiter, {what} in-process")

    def _remote_counts(self, limits: list[Limit]) -> dict[str, tuple[int, float]]:
        pipe = self.redis.pipeline(transaction=False)
        for limit in limits:
            pipe.get(self.prefix + limit.key)
            pipe.pttl(self.prefix + limit.key)
        replies = pipe.execute()
        counts = {}
        for i, limit in enumerate(limits):
            count, pttl = replies[2 * i], replies[2 * i + 1]
            counts[limit.key] = (int(count or 0), max(pttl, 0) / 1000 if pttl and pttl > 0 else self.window)
        return counts

    def retry_after(self, limits: list[Limit]) -> int | None:
        """Seconds until an attempt is allowed again, or ``None`` when no limit is reached."""
        counts = self._remote(lambda: self._remote_counts(limits), "counting")
        if counts is None:
            counts = {limit.key: self.local.get(limit.key) for limit in limits}
        waits = [counts[limit.key][1] for limit in limits if counts[limit.key][0] >= limit.max_failures]
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def _record_remote(self, limits: list[Limit]) -> list[int]:
        pipe = self.redis.pipeline(transaction=True)
        for limit in limits:
            pipe.set(self.prefix + limit.key, 0, ex=self.window, nx=True)
            pipe.incr(self.prefix + limit.key)
        return [int(count) for count in pipe.execute()[1::2]]

    def record_failure(self, limits: list[Limit]) -> list[Limit]:
        """Count one event against each limit; returns the limits it just filled (reached their
        maximum with this very event: once per window, so once per lock)."""
        for limit in limits:
            self.local.incr(limit.key, self.window)
        counts = self._remote(lambda: self._record_remote(limits), "failure counted")
        if counts is None:
            counts = [self.local.get(limit.key)[0] for limit in limits]
        return [limit for limit, count in zip(limits, counts, strict=True) if count == limit.max_failures]

    def clear(self, limit: Limit) -> int:
        """Lift a limit now (an operator's unlock): the count it had in Redis (raises
        redis.RedisError when Redis is down). This process's fallback count goes too."""
        self.local.reset(limit.key)
        return int(self.redis.getdel(self.prefix + limit.key) or 0)

    def reset(self, limit: Limit) -> None:
        self.local.reset(limit.key)
        self._remote(lambda: self.redis.delete(self.prefix + limit.key), "reset")
