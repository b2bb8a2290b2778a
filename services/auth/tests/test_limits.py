"""The login limiter against a Redis that goes away: local counts decide, and the breaker keeps
the dead Redis from being tried on every call."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker
import pytest
import redis

from wharf_auth.limits import Limit, LoginLimiter

PAUSE = 0.5


@pytest.fixture
def relayed_redis(redis_container: Any, tcp_proxy: Callable[..., Any]) -> Iterator[tuple[redis.Redis, Any]]:
    """A client of the real Redis through a relay the test can cut."""
    proxy = tcp_proxy((redis_container.get_container_host_ip(), int(redis_container.get_exposed_port(6379))))
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.25, socket_connect_timeout=0.25)
    client.delete("auth:login-failures:acct:breaker-test")
    yield client, proxy
    client.close()


def test_dead_redis_is_skipped_during_the_pause_and_tried_again_after(
    relayed_redis: tuple[redis.Redis, Any],
) -> None:
    client, proxy = relayed_redis
    limiter = LoginLimiter(client, 60, breaker=pybreaker.CircuitBreaker(fail_max=1, reset_timeout=PAUSE))
    limits = [Limit("acct:breaker-test", 3)]

    limiter.record_failure(limits)
    assert client.get("auth:login-failures:acct:breaker-test") == b"1"

    proxy.cut()
    limiter.record_failure(limits)  # fails against Redis: the breaker opens
    attempts_after_first_failure = proxy.accepted
    for _ in range(10):
        limiter.record_failure(limits)
        limiter.retry_after(limits)
    assert proxy.accepted == attempts_after_first_failure  # not one connection attempt during the pause
    # meanwhile the in-process counts still lock the account (12 failures here >= 3)
    assert limiter.retry_after(limits) is not None

    time.sleep(PAUSE + 0.1)  # the pause is over: Redis is tried again (and still fails)
    limiter.retry_after(limits)
    assert proxy.accepted > attempts_after_first_failure

    proxy.restore()
    time.sleep(PAUSE + 0.1)
    limiter.record_failure(limits)
    assert limiter.breaker.current_state == pybreaker.STATE_CLOSED
    assert client.get("auth:login-failures:acct:breaker-test") == b"2"  # Redis counts again
