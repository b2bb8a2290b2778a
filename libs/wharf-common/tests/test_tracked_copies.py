"""TrackedCopies against a real Redis: copies in memory, dropped when Redis says a key changed."""

from __future__ import annotations

import multiprocessing
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from wharf_common import cache
from wharf_common.cache import TrackedCopies, pending_bytes_probe

TIMEOUT = 0.5


@pytest.fixture
def writer(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["probe", "read every time"])
def make_copies(
    request: pytest.FixtureRequest, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., TrackedCopies]]:
    """Copies that look for pushes with the kernel's byte count, or (where the kernel cannot tell)
    by reading the socket on every call: both must hold every guarantee."""
    if request.param == "read every time":
        monkeypatch.setattr(cache, "pending_bytes_probe", lambda _connection: None)
    made: list[TrackedCopies] = []

    def make(url: str = redis_url, *, confirm_seconds: float = 60.0, max_entries: int = 100) -> TrackedCopies:
        pool = redis.ConnectionPool.from_url(url, protocol=3, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        made.append(TrackedCopies(pool.make_connection, max_entries, confirm_seconds))
        return made[-1]

    yield make
    for copies in made:
        copies.close()


@pytest.fixture
def key() -> str:
    return f"test:copies:{uuid.uuid4()}"


@pytest.fixture
def holding_v1(
    make_copies: Callable[..., TrackedCopies], writer: redis.Redis, key: str, redis_container: Any, tcp_proxy: Any
) -> Callable[..., tuple[Any, TrackedCopies]]:
    """Copies reaching Redis through a fault-injecting relay, holding ``key`` = v1 in memory."""

    def make(**options: Any) -> tuple[Any, TrackedCopies]:
        proxy = tcp_proxy((redis_container.get_container_host_ip(), int(redis_container.get_exposed_port(6379))))
        copies = make_copies(f"redis://127.0.0.1:{proxy.port}/0", **options)
        writer.set(key, b"v1")
        assert copies.get(key) == b"v1"
        return proxy, copies

    return make


def test_a_repeated_read_is_answered_from_memory(holding_v1: Callable[..., Any], key: str) -> None:
    proxy, copies = holding_v1()
    proxy.freeze()  # Redis can no longer answer: only memory can
    started = time.monotonic()
    assert copies.get(key) == b"v1"
    assert time.monotonic() - started < TIMEOUT / 2


def _push_delivered(copies: TrackedCopies) -> None:
    """Wait until the invalidation is in the copies' socket. Redis sends it in the same step as the
    writer's reply, but may write the reply first: a read microseconds later can beat it here, while
    in the stack a whole HTTP exchange separates a write's answer from the next read."""
    select.select([copies._connection._sock], [], [], 1.0)  # type: ignore[union-attr]


def test_every_write_by_another_client_is_seen_by_the_next_read(
    make_copies: Callable[..., TrackedCopies], writer: redis.Redis, key: str
) -> None:
    copies = make_copies()
    for n in range(200):
        writer.set(key, f"v{n}")
        if n:
            _push_delivered(copies)
        assert copies.get(key) == f"v{n}".encode(), f"write {n} read stale"
        assert copies.get(key) == f"v{n}".encode()
    writer.delete(key)
    _push_delivered(copies)
    assert copies.get(key) is None


def test_an_absent_key_is_not_kept(make_copies: Callable[..., TrackedCopies], writer: redis.Redis, key: str) -> None:
    copies = make_copies()
    assert copies.get(key) is None
    writer.set(key, b"filled")  # its invalidation may still be on the way: the read must not need it
    assert copies.get(key) == b"filled"


def test_forget_drops_a_copy_at_once(holding_v1: Callable[..., Any], writer: redis.Redis, key: str) -> None:
    proxy, copies = holding_v1()
    proxy.freeze()  # the invalidation of the next write cannot arrive
    writer.set(key, b"v2")
    copies.forget(key)
    with pytest.raises(redis.TimeoutError):
        copies.get(key)  # not served from memory: asked of Redis, which cannot answer


def test_a_silent_connection_stops_the_copies_after_confirm_seconds_and_recovers(
    holding_v1: Callable[..., Any], writer: redis.Redis, key: str
) -> None:
    proxy, copies = holding_v1(confirm_seconds=0.3)
    proxy.freeze()
    writer.set(key, b"v2")  # the invalidation is stuck in the frozen connection
    time.sleep(0.4)
    with pytest.raises(redis.TimeoutError):
        copies.get(key)
    proxy.restore()
    assert copies.get(key) == b"v2"


def test_a_lost_connection_empties_the_copies(holding_v1: Callable[..., Any], writer: redis.Redis, key: str) -> None:
    proxy, copies = holding_v1()
    proxy.cut()
    writer.set(key, b"v2")  # written while the connection is gone: its invalidation is lost
    with pytest.raises(redis.ConnectionError):
        copies.get(key)
    proxy.restore()
    assert copies.get(key) == b"v2"


def test_a_flushed_database_empties_the_copies(
    make_copies: Callable[..., TrackedCopies], redis_url: str, key: str
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own, flushed below
    writer = redis.Redis.from_url(url)
    copies = make_copies(url)
    writer.set(key, b"v1")
    assert copies.get(key) == b"v1"
    writer.flushdb()
    _push_delivered(copies)
    assert copies.get(key) is None
    writer.close()


def test_copies_are_bounded(make_copies: Callable[..., TrackedCopies], writer: redis.Redis, key: str) -> None:
    copies = make_copies(max_entries=3)
    keys = [f"{key}:{n}" for n in range(10)]
    for n, each in enumerate(keys):
        writer.set(each, n)
        assert copies.get(each) == str(n).encode()
    assert len(copies._copies) == 3
    for n, each in enumerate(keys):  # evicted or not, every read is right
        assert copies.get(each) == str(n).encode()
    writer.delete(*keys)


def _read_in_child(copies: TrackedCopies, key: str, results: Any) -> None:
    results.put(copies.get(key))


def test_a_forked_child_reads_on_a_connection_of_its_own(
    make_copies: Callable[..., TrackedCopies], writer: redis.Redis, key: str
) -> None:
    copies = make_copies()
    writer.set(key, b"v1")
    assert copies.get(key) == b"v1"  # the parent's connection is open
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    writer.set(key, b"v2")
    child = context.Process(target=_read_in_child, args=(copies, key, results))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert results.get(timeout=1) == b"v2"
    assert copies.get(key) == b"v2"  # the parent's connection was not disturbed by the child


def test_the_probe_reports_bytes_waiting_on_tcp_and_declines_where_it_cannot_tell(redis_url: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, protocol=3)
    tcp = pool.make_connection()
    tcp.connect()
    tcp.send_command("PING")
    probe = pending_bytes_probe(tcp)
    assert probe is not None
    assert probe()  # the PONG waits
    assert tcp.read_response() in (b"PONG", "PONG")
    assert not probe()
    tcp.disconnect()

    unix, peer = socket.socketpair()
    with unix, peer:
        peer.send(b"+PONG\r\n")  # waiting, yet a UNIX socket's own count stays 0: no probe
        assert pending_bytes_probe(SimpleNamespace(_sock=unix)) is None  # type: ignore[arg-type]
    assert pending_bytes_probe(SimpleNamespace()) is None  # type: ignore[arg-type]
