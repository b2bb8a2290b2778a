"""Redis for the services: the client, and a cache-aside store of JSON documents that any
resource can use (opt-in).

Every cached document is stored with the *stamps* it was read under: the stamp of its subject (one
item, or one scope of list pages, such as one owner's) and the namespace's. A write replaces the
stamps of what it changed, after its commit, so every document cached under them stops counting
as a hit at once, on every replica. A lookup reads the stamps and the document in one round trip
(MGET), before the database read, and a fill stores the document under the stamps read then: a
read that raced a write stores its document under a stamp the write has already retired, so it is
never served.

Each process keeps the answers to its lookups in memory with redis-py's own client-side caching
(``CacheConfig``, RESP3 ``CLIENT TRACKING``): Redis pushes an invalidation to every process that
holds an answer as soon as one of its keys changes, and redis-py applies the pushes waiting on a
connection before it serves an answer. A write returns only after Redis has sent those pushes. A
connection that goes silent without closing brings no pushes, so at least once per
``CONFIRM_SECONDS`` a PING proves Redis still answers. That memory is bounded: at most
``LOCAL_ENTRIES`` answers of single-item lookups, each about 1 KiB besides the item's own JSON
(measured), so about 11 MiB per process for the api's users (docs/operations.md, "Memory limits").
List pages (up to 100 items each) are looked up through ``plain_client``, a client without copies
in memory: kept there, a few thousand pages would take hundreds of MiB. Writes replace their stamps
through it too, which skips the copies' bookkeeping (redis-py applies the invalidations waiting on a
connection before every command it sends through it).

Redis errors never fail a request: a lookup is a miss, a fill is skipped, and a circuit breaker
leaves a failing Redis alone for a few seconds, so that an outage costs one short timeout now and
then, not one per call. A write whose stamps could not be replaced replaces the namespace's stamp
(retiring the whole cache) on the first call that reaches Redis again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import pybreaker
import redis
from redis.backoff import NoBackoff
from redis.cache import CacheConfig
from redis.retry import Retry

from wharf_common.settings import CommonSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

SOCKET_TIMEOUT_SECONDS = 0.25  # a slow or dead Redis must not hold a request
BREAKER_PAUSE_SECONDS = 2  # how long a failing Redis is left alone before it is tried again
# A replaced stamp outlives every document cached under its predecessor, plus a reader that
# stalled between its lookup and its fill (requests end well within this).
STAMP_GRACE_SECONDS = 300
CONFIRM_SECONDS = 1.0  # longest a process answers from memory without hearing from Redis
LOCAL_ENTRIES = 10_000  # single-item answers each process keeps in memory (see above)


def make_redis(settings: CommonSettings, *, local_copies: bool = False) -> redis.Redis:
    """A client of the configured Redis; with ``local_copies``, answers to reads are kept in this
    process's memory while Redis says they are current (redis-py's client-side caching)."""
    extra = {"protocol": 3, "cache_config": CacheConfig(max_size=LOCAL_ENTRIES)} if local_copies else {}
    return redis.Redis.from_url(
        str(settings.redis_url),
        username=settings.redis_username,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), retries=1),  # once at once: a pooled connection may have been dropped
        health_check_interval=30,
        client_name=settings.service_name,
        **extra,
    )


def make_breaker() -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(fail_max=1, reset_timeout=BREAKER_PAUSE_SECONDS)


def guarded(breaker: pybreaker.CircuitBreaker, operation: Callable[[], T], default: T, what: str) -> T:
    """``operation()``, or ``default`` when Redis fails or the breaker is leaving it alone."""
    try:
        return breaker.call(operation)
    except pybreaker.CircuitBreakerError:
        return default
    except (redis.RedisError, OSError) as exc:
        log.warning("redis unavailable (%s): %s", what, type(exc).__name__)
        return default


@dataclass(frozen=True)
class Lookup:
    """What a lookup found: the ``document`` (None on a miss) and what a fill needs."""

    key: str
    stamps: bytes | None  # None: Redis could not be asked, so nothing is filled either
    document: bytes | None


class Cache:
    """Cache-aside for the documents of one service (keys under ``namespace:``).

    ``item(kind, id)`` and ``page(kind, scope, page)`` look up; ``fill(lookup, document)`` stores
    what the database gave on a miss; ``changed(kind, id, scopes)`` follows every committed write.
    A ``ttl`` of 0 turns lookups and fills off; writes still replace stamps, for replicas that cache.
    ``client`` answers single-item lookups and stores fills (with local copies, see :func:`make_redis`:
    a fill's own invalidation comes back on the connection that sent it, before its reply);
    ``plain_client``, when given (a client that keeps nothing in memory), looks up list pages and
    replaces the stamps after a write.
    """

    def __init__(
        self, client: redis.Redis, *, namespace: str, ttl: int, plain_client: redis.Redis | None = None
    ) -> None:
        self._redis = client
        self._plain = plain_client or client
        self._namespace = namespace
        self._ttl = ttl
        self._breaker = make_breaker()
        self._lost_change = False  # a write's stamps could not be replaced
        self._confirmed_at = -CONFIRM_SECONDS  # when Redis last answered a PING

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def item(self, kind: str, item_id: str, scope: str = "all") -> Lookup:
        """One item, as ``scope`` may see it (an owner's id where only the owner may)."""
        return self._lookup(self._redis, f"{kind}:{item_id}", f"{kind}:{scope}:{item_id}")

    def page(self, kind: str, scope: str, page: str) -> Lookup:
        """A list page; ``scope`` is who may see it (e.g. one owner's id, or ``all``)."""
        return self._lookup(self._plain, f"{kind}:pages:{scope}", f"{kind}:pages:{scope}:{page}")

    def fill(self, lookup: Lookup, document: bytes) -> None:
        if self.enabled and lookup.stamps is not None:
            value = lookup.stamps + b"\n" + document
            self._guarded(lambda: self._redis.set(self._key(lookup.key), value, ex=self._ttl), None, "fill")

    def changed(self, kind: str, item_id: str | None = None, scopes: Iterable[str] = ()) -> None:
        """After a committed write: retire the cached item and the list pages of ``scopes``."""
        items = [f"{kind}:{item_id}"] if item_id is not None else []
        subjects = items + [f"{kind}:pages:{s}" for s in scopes]
        # Only lookups through ``client`` are kept in processes' memory: a write that retires none of
        # them (a create: list pages only, when they are looked up through ``plain_client``) has no
        # invalidation to wait for.
        in_memory = bool(items) or self._plain is self._redis
        if not self._guarded(lambda: self._replace_stamps(subjects, in_memory), False, "invalidation"):
            self._lost_change = True

    def clear(self) -> bool:
        """Retire every document of the namespace (after a restore, or a lost invalidation)."""
        self._plain.set(self._stamp_key("namespace"), uuid.uuid4().hex)
        return True

    def _lookup(self, client: redis.Redis, subject: str, key: str) -> Lookup:
        if not self.enabled:
            return Lookup(key, None, None)
        found = self._guarded(
            lambda: (
                self._confirmed(client)
                and client.mget(self._stamp_key("namespace"), self._stamp_key(subject), self._key(key))
            ),
            None,
            "lookup",
        )
        if found is None:
            return Lookup(key, None, None)
        namespace, stamp, stored = found
        stamps = (namespace or b"") + b" " + (stamp or b"")
        seen, _, document = (stored or b"").partition(b"\n")
        return Lookup(key, stamps, document if stored is not None and seen == stamps else None)

    def _confirmed(self, client: redis.Redis) -> bool:
        """For a lookup through ``client`` (the one that may keep copies in memory): PING Redis if it
        has not answered one for CONFIRM_SECONDS (raises if it does not answer)."""
        now = time.monotonic()
        if client is self._redis and now - self._confirmed_at > CONFIRM_SECONDS:
            self._redis.ping()
            self._confirmed_at = now
        return True

    def _replace_stamps(self, subjects: list[str], in_memory: bool) -> bool:
        expiry = self._ttl + STAMP_GRACE_SECONDS
        if len(subjects) == 1:  # one command needs no pipeline
            self._plain.set(self._stamp_key(subjects[0]), uuid.uuid4().hex, ex=expiry)
        else:
            pipe = self._plain.pipeline(transaction=False)
            for subject in subjects:
                pipe.set(self._stamp_key(subject), uuid.uuid4().hex, ex=expiry)
            pipe.execute()
        if in_memory:
            # Redis sends a write's reply and its invalidation pushes in the same flush, but may send
            # the reply first; a second round trip returns only after that flush has written every
            # push, so another process that the client asks next has its push waiting on its connection.
            self._plain.ping()
        return True

    def _guarded(self, operation: Callable[[], T], default: T, what: str) -> T:
        if self._lost_change:
            if not guarded(self._breaker, self.clear, False, "clear after a lost invalidation"):
                return default
            self._lost_change = False
            log.info("cache cleared: a write's invalidation had not reached Redis")
        return guarded(self._breaker, operation, default, what)

    def _key(self, key: str) -> str:
        return f"{self._namespace}:{key}"

    def _stamp_key(self, subject: str) -> str:
        return f"{self._namespace}:stamp:{subject}"
