"""Cache-aside in Redis for single users and list pages.

Keys live under ``api:``. Every write bumps a generation counter (``api:users:gen``) in the same
Redis transaction that deletes the written user's entry:
- list pages are stored with the generation they were read under and count as hits only while it
  is current, so one increment invalidates every page;
- a user entry is filled only if the generation is unchanged since before the database read (a
  Lua compare-and-set), so a read racing a write cannot put the old row back after the delete.
Redis errors never fail a request: the call is a miss, and the :class:`Breaker` keeps a dead Redis
from being tried on every call. Invalidations that could not reach Redis are replayed as soon as
it answers again. A TTL of 0 turns reads off (every lookup is a miss without asking Redis, nothing is
filled) but keeps invalidating, so replicas that do cache never serve what this one changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import redis

from wharf_common.cache import Breaker, TrackedCopies

log = logging.getLogger(__name__)

GENERATION_KEY = "api:users:gen"
CONFIRM_SECONDS = 1.0  # longest a worker answers from memory without hearing from Redis (TrackedCopies)
MAX_PENDING = 10_000
T = TypeVar("T")

# KEYS[1] entry, KEYS[2] generation; ARGV[1] generation seen before the read, ARGV[2] value, ARGV[3] ttl.
_FILL_IF_CURRENT = """
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def user_key(user_id: str) -> str:
    return f"api:user:{user_id}"


def list_key(limit: int, cursor: str | None) -> str:
    return f"api:users:page:{limit}:{cursor or ''}"


class UserCache:
    def __init__(
        self, client: redis.Redis, ttl: int, breaker: Breaker | None = None, copies: TrackedCopies | None = None
    ) -> None:
        self._redis = client
        # Where single users and the generation are read: copies in this process's memory, kept
        # while Redis says they are current (wharf_common.cache.TrackedCopies); else Redis itself.
        self._read: Callable[[str], bytes | None] = copies.get if copies is not None else client.get
        self._copies = copies
        self._ttl = ttl
        self.enabled = ttl > 0
        self._breaker = breaker or Breaker()
        self._fill = client.register_script(_FILL_IF_CURRENT)
        self._pending: set[str] = set()  # user ids whose invalidation did not reach Redis
        self._pending_overflow = False

    def _call(self, operation: Callable[[], T], default: T) -> T:
        if not self._breaker.available():
            return default
        try:
            if self._pending or self._pending_overflow:
                self._replay_invalidations()
            result = operation()
        except (redis.RedisError, OSError) as exc:
            if self._breaker.available():
                log.warning("redis unavailable, serving without cache: %s", exc)
            self._breaker.failed()
            return default
        self._breaker.succeeded()
        return result

    def close(self) -> None:
        """Close the copies' own connection (the shared client belongs to the app)."""
        if self._copies is not None:
            self._copies.close()

    # -- single users ---------------------------------------------------------------------------

    def get_user(self, user_id: str) -> bytes | None:
        """The cached document, or None: then read the generation (:meth:`generation`) before the
        database, and pass it to :meth:`fill_user`."""
        if not self.enabled:
            return None
        return self._call(lambda: self._read(user_key(user_id)), None)

    def generation(self) -> bytes:
        """The current generation. A locally cached copy may be one write behind while that write's
        invalidation is in flight: then the fill's compare-and-set fails, so it is never filled stale."""
        if not self.enabled:
            return b"0"
        return self._call(lambda: self._read(GENERATION_KEY), None) or b"0"

    def fill_user(self, user_id: str, document: bytes, generation: bytes) -> None:
        if not self.enabled:
            return
        keys = [user_key(user_id), GENERATION_KEY]
        self._call(lambda: self._fill(keys=keys, args=[generation, document, self._ttl]), 0)

    # -- list pages -----------------------------------------------------------------------------

    def get_page(self, limit: int, cursor: str | None) -> tuple[bytes | None, bytes]:
        if not self.enabled:
            return None, b"0"
        generation, stored = self._call(lambda: self._redis.mget(GENERATION_KEY, list_key(limit, cursor)), [None, None])
        generation = generation or b"0"
        if stored is not None:
            seen, _, document = stored.partition(b"\n")
            if seen == generation:
                return document, generation
        return None, generation

    def fill_page(self, limit: int, cursor: str | None, document: bytes, generation: bytes) -> None:
        if not self.enabled:
            return
        self._call(lambda: self._redis.set(list_key(limit, cursor), generation + b"\n" + document, ex=self._ttl), None)

    # -- writes ---------------------------------------------------------------------------------

    def invalidate(self, user_id: str) -> None:
        """After a committed write to ``user_id``: drop its entry and every list page."""
        redis_was_up = self._breaker.available()
        if self._call(lambda: self._invalidate([user_id]), False):
            return
        if redis_was_up:  # a fresh failure may be one lost packet: other replicas still read Redis
            try:
                self._invalidate([user_id])
                self._breaker.succeeded()
                return
            except (redis.RedisError, OSError):
                pass
        self._remember(user_id)

    def _invalidate(self, user_ids: list[str]) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        for user_id in user_ids:
            pipe.delete(user_key(user_id))
        pipe.incr(GENERATION_KEY)
        pipe.execute()
        if self._copies is not None:  # this worker's next read must not even race Redis's push
            self._copies.forget(GENERATION_KEY, *(user_key(user_id) for user_id in user_ids))
        return True

    def _remember(self, user_id: str) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending_overflow = True
        else:
            self._pending.add(user_id)

    def clear(self) -> int:
        """Drop every api cache entry (after a restore); the next reads refill from Postgres."""
        removed = self._unlink_matching("api:*")
        self._redis.incr(GENERATION_KEY)
        return removed

    def _unlink_matching(self, pattern: str) -> int:
        removed = 0
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) == 500:
                removed += self._redis.unlink(*batch)
                batch.clear()
        if batch:
            removed += self._redis.unlink(*batch)
        return removed

    def _replay_invalidations(self) -> None:
        pending, overflow = list(self._pending), self._pending_overflow
        if overflow:  # too many to list: drop every user entry
            self._unlink_matching("api:user:*")
        self._invalidate(pending)
        self._pending.difference_update(pending)
        self._pending_overflow = False
        log.info("replayed %d cache invalidations after a Redis outage", len(pending))
