"""Redis client with short timeouts: a slow or dead Redis must not hold a request."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from wharf_common.settings import CommonSettings


def make_redis(settings: CommonSettings) -> redis.Redis:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis.Redis.from_url(
        str(settings.redis_url),
        username=settings.redis_username,
        password=password,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
        health_check_interval=30,
        client_name=settings.service_name,
        decode_responses=False,
    )


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
