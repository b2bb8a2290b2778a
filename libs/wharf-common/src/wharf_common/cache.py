"""Redis client with short timeouts: a slow or dead Redis must not hold a request."""

from __future__ import annotations

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
