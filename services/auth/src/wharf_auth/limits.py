"""Login throttling: failures per account and per client address in Redis, with an in-process fallback.

Failures are counted in fixed windows that start at the first failure (``SET NX EX`` then ``INCR``).
Every failure is also counted in process memory, and while Redis errors the local counts decide, so
an outage neither opens the gate nor locks everyone out.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

PREFIX = "auth:login-failures:"


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


class LoginLimiter:
    def __init__(self, client: redis.Redis, window_seconds: int, *, local: LocalCounter | None = None) -> None:
        self.redis = client
        self.window = window_seconds
        self.local = local or LocalCounter()

    def retry_after(self, limits: list[Limit]) -> int | None:
        """Seconds until an attempt is allowed again, or ``None`` when no limit is reached."""
        waits: list[float] = []
        remote: dict[str, tuple[int, float]] = {}
        try:
            pipe = self.redis.pipeline(transaction=False)
            for limit in limits:
                pipe.get(PREFIX + limit.key)
                pipe.pttl(PREFIX + limit.key)
            replies = pipe.execute()
            for i, limit in enumerate(limits):
                count, pttl = replies[2 * i], replies[2 * i + 1]
                remote[limit.key] = (int(count or 0), max(pttl, 0) / 1000 if pttl and pttl > 0 else self.window)
        except redis.RedisError as exc:
            log.warning("login limiter: redis unavailable, using in-process counts: %s", type(exc).__name__)
            remote = {limit.key: self.local.get(limit.key) for limit in limits}
        for limit in limits:
            count, left = remote[limit.key]
            if count >= limit.max_failures:
                waits.append(left)
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def record_failure(self, limits: list[Limit]) -> None:
        for limit in limits:
            self.local.incr(limit.key, self.window)
        try:
            pipe = self.redis.pipeline(transaction=True)
            for limit in limits:
                pipe.set(PREFIX + limit.key, 0, ex=self.window, nx=True)
                pipe.incr(PREFIX + limit.key)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("login limiter: redis unavailable, failure counted in-process: %s", type(exc).__name__)

    def reset(self, limit: Limit) -> None:
        self.local.reset(limit.key)
        try:
            self.redis.delete(PREFIX + limit.key)
        except redis.RedisError as exc:
            log.warning("login limiter: redis unavailable on reset: %s", type(exc).__name__)
