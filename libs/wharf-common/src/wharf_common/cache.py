"""Redis client with short timeouts: a slow or dead Redis must not hold a request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from redis.cache import CacheConfig

from wharf_common.settings import CommonSettings


def _connection_options(settings: CommonSettings) -> dict[str, Any]:
    return {
        "username": settings.redis_username,
        "password": settings.redis_password.get_secret_value() if settings.redis_password else None,
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
        "health_check_interval": 30,
        "client_name": settings.service_name,
        "decode_responses": False,
    }


def make_redis(settings: CommonSettings) -> redis.Redis:
    return redis.Redis.from_url(str(settings.redis_url), **_connection_options(settings))


def make_tracking_redis(settings: CommonSettings, max_entries: int) -> redis.Redis:
    """A client whose reads (GET) are answered from this process's memory until Redis says the key
    changed: server-assisted client-side caching (RESP3 ``CLIENT TRACKING``), as redis-py implements it.

    Before a cached value is used, the invalidations Redis has pushed on the connection that read it
    are processed, and a lost connection empties the whole local cache. One connection, shared by the
    process's threads in turn: redis-py drains invalidations from the connection that filled an entry,
    which must then not be in the middle of another thread's command.
    """
    pool = redis.BlockingConnectionPool.from_url(
        str(settings.redis_url),
        max_connections=1,
        timeout=settings.redis_socket_timeout,
        protocol=3,
        cache_config=CacheConfig(max_size=max_entries),
        **_connection_options(settings),
    )
    return redis.Redis(connection_pool=pool)


class Breaker:
    """Skip a dependency for a while after it fails, doubling the pause up to ``max_pause``, so a
    dead Redis costs one short timeout per pause instead of one per call."""

    def __init__(self, base_pause: float = 1.0, max_pause: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._base = base_pause
        self._max = max_pause
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    def available(self) -> bool:
        return self._clock() >= self._open_until

    def failed(self) -> None:
        self._failures += 1
        self._open_until = self._clock() + min(self._max, self._base * 2 ** (self._failures - 1))

    def succeeded(self) -> None:
        self._failures = 0
        self._open_until = 0.0
