"""The cache-aside store against a real Redis: hits while the stamps hold, never a document a
write retired, scopes kept apart, and a failing Redis that costs nothing but misses."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cache import CacheConfig
from redis.retry import Retry

from wharf_common.cache import BREAKER_PAUSE_SECONDS, Cache


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_cache(client: redis.Redis, namespace: str) -> Iterator[Callable[..., Cache]]:
    def make(redis_client: redis.Redis = client, ttl: int = 60, plain_client: redis.Redis | None = None) -> Cache:
        return Cache(redis_client, namespace=namespace, ttl=ttl, plain_client=plain_client)

    yield make
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)


def test_a_filled_item_is_a_hit_until_a_write_changes_it(make_cache: Callable[..., Cache]) -> None:
    cache, other_replica = make_cache(), make_cache()
    assert cache.item("notes", "1").document is None
    cache.fill(cache.item("notes", "1"), b'{"v":1}')
    assert other_replica.item("notes", "1").document == b'{"v":1}'
    other_replica.changed("notes", "1")
    assert cache.item("notes", "1").document is None


def test_with_copies_in_memory_a_write_elsewhere_is_seen_by_the_next_lookup(
    make_cache: Callable[..., Cache], redis_url: str
) -> None:
    """Each process answers repeated lookups from memory (redis-py's client-side caching); a write
    through another process reaches that memory before the writer's call returns (it waits until
    Redis has sent the pushes; the kernel's delivery of them is allowed a moment)."""
    local = [redis.Redis.from_url(redis_url, protocol=3, cache_config=CacheConfig()) for _ in range(2)]
    first, second = make_cache(local[0]), make_cache(local[1])
    try:
        for n in range(50):
            writer, reader = (first, second) if n % 2 else (second, first)
            filled = f"v{n}".encode()
            reader.fill(reader.item("notes", "1"), filled)
            assert reader.item("notes", "1").document == filled  # from memory now
            # A fill does not wait for the pushes it causes (a copy it retires answers a miss, never
            # a stale document): the writer's memory may hold the old document for that moment.
            assert _seen_within(0.1, lambda w=writer, v=filled: w.item("notes", "1").document == v), n
            writer.changed("notes", "1")
            assert _seen_within(0.1, lambda r=reader: r.item("notes", "1").document is None), n
    finally:
        for client in local:
            client.close()


def test_with_a_plain_client_only_single_items_are_kept_in_memory(
    make_cache: Callable[..., Cache], client: redis.Redis, redis_url: str
) -> None:
    """The copies in memory are bounded by their number times an item's size: list pages (up to 100
    items each) are looked up in Redis every time, never kept; a write's stamps, replaced through the
    plain client, still retire the copies."""
    local = redis.Redis.from_url(redis_url, protocol=3, cache_config=CacheConfig())
    cache, other_replica = make_cache(local, plain_client=client), make_cache()
    try:
        for n in range(3):
            cache.fill(cache.page("notes", "all", f"20:{n}"), b'{"items": []}')
            assert cache.page("notes", "all", f"20:{n}").document == b'{"items": []}'
        cache.fill(cache.item("notes", "1"), b'{"v":1}')
        assert cache.item("notes", "1").document == b'{"v":1}'
        assert local.get_cache().size == 1
        other_replica.changed("notes", scopes=["all"])
        assert cache.page("notes", "all", "20:0").document is None
        cache.changed("notes", "1")  # its stamp replaced through the plain client: the copy is retired
        assert cache.item("notes", "1").document is None
    finally:
        local.close()


def test_a_write_waits_for_invalidation_pushes_only_when_it_retired_copies_in_memory(
    make_cache: Callable[..., Cache], client: redis.Redis, redis_url: str
) -> None:
    """List pages looked up through the plain client are never in memory: a create (pages only) is
    one SET, seen by the next page lookup anywhere; a change of an item also waits (a PING) until
    Redis has sent the pushes that retire its copies."""
    local = [redis.Redis.from_url(redis_url, protocol=3, cache_config=CacheConfig()) for _ in range(2)]
    writer, reader = make_cache(local[0], plain_client=client), make_cache(local[1], plain_client=client)

    def pings() -> int:
        return int(client.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    try:
        reader.fill(reader.page("notes", "all", "20:"), b'{"items": []}')
        before = pings()
        writer.changed("notes", scopes=["all"])
        assert pings() == before
        assert reader.page("notes", "all", "20:").document is None
        writer.changed("notes", "1", scopes=["all"])
        assert pings() == before + 1
    finally:
        for connection in local:
            connection.close()


def test_a_fill_that_raced_a_write_is_never_served(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    lookup = cache.item("notes", "1")  # a miss, before the database read
    cache.changed("notes", "1")  # a write commits meanwhile
    cache.fill(lookup, b'{"v":"old"}')  # the read fills what it saw
    assert cache.item("notes", "1").document is None


def test_pages_are_scoped_and_retired_per_scope(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    for scope in ("alice", "bob"):
        cache.fill(cache.page("notes", scope, "20:"), scope.encode())
    assert cache.page("notes", "alice", "20:").document == b"alice"
    cache.changed("notes", "n1", scopes=["alice"])
    assert cache.page("notes", "alice", "20:").document is None
    assert cache.page("notes", "bob", "20:").document == b"bob"  # another owner's pages stay


def test_clear_retires_everything(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    cache.fill(cache.item("notes", "1"), b"x")
    cache.fill(cache.page("notes", "all", "20:"), b"y")
    assert cache.clear()
    assert cache.item("notes", "1").document is None
    assert cache.page("notes", "all", "20:").document is None


def test_documents_live_for_the_ttl_and_ttl_zero_reads_nothing(
    make_cache: Callable[..., Cache], client: redis.Redis, namespace: str
) -> None:
    cache = make_cache(ttl=30)
    lookup = cache.item("notes", "1")
    cache.fill(lookup, b"x")
    assert 0 < client.ttl(f"{namespace}:notes:all:1") <= 30
    off = make_cache(ttl=0)
    assert off.item("notes", "1").document is None
    off.fill(off.item("notes", "2"), b"y")
    assert client.get(f"{namespace}:notes:all:2") is None
    off.changed("notes", "1")  # writes still retire what caching replicas hold
    assert cache.item("notes", "1").document is None


@pytest.mark.timing
def test_a_dead_redis_means_misses_and_a_lost_invalidation_clears_the_cache_on_return(
    make_cache: Callable[..., Cache], redis_container: Any, tcp_proxy: Callable[..., Any]
) -> None:
    proxy = tcp_proxy((redis_container.get_container_host_ip(), int(redis_container.get_exposed_port(6379))))
    relayed = redis.Redis(
        host="127.0.0.1", port=proxy.port, socket_timeout=0.25, socket_connect_timeout=0.25, retry=Retry(NoBackoff(), 1)
    )
    cache, healthy = make_cache(relayed), make_cache()
    cache.fill(cache.item("notes", "1"), b"old")
    proxy.cut()
    started = time.monotonic()
    for _ in range(20):
        assert cache.item("notes", "1").document is None  # a miss, never an error
    cache.changed("notes", "1")  # lost: Redis is unreachable from this replica
    assert time.monotonic() - started < 2  # the breaker skips Redis instead of waiting each time
    assert healthy.item("notes", "1").document == b"old"  # another replica still serves it (bounded by the TTL)
    proxy.restore()
    time.sleep(BREAKER_PAUSE_SECONDS + 0.2)
    assert cache.item("notes", "1").document is None  # the first call back clears the namespace
    assert healthy.item("notes", "1").document is None
    relayed.close()


def _seen_within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True
