"""Redis client with short timeouts: a slow or dead Redis must not hold a request."""

from __future__ import annotations

import math
import os
import select
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.connection

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


class TrackedCopies:
    """Values of Redis keys kept in this process's memory for as long as Redis says they have not
    changed: server-assisted client-side caching (RESP3 ``CLIENT TRACKING``) on one connection.

    A key read through :meth:`get` is tracked by Redis for that connection; when any client changes
    it, Redis pushes an invalidation on the connection in the same step that executes the write, so
    it is on the wire before the writer can answer. Before a copy is used, pending pushes are
    applied; a lost connection empties every copy (tracking restarts with the connection). A
    connection that goes silent without closing (a partition, a frozen Redis) would bring no
    invalidations, so at least once per ``confirm_seconds`` a PING proves it still answers; an
    error is raised otherwise and the caller goes to the source of truth.

    redis-py's own client-side caching does the same, but measured on the benchmark stack a hit
    cost ~65 us of a worker's time there (connection pool, retries, three socket polls per call),
    against a few microseconds here. One lock: the connection carries one command at a time.
    """

    def __init__(
        self,
        connect: Callable[[], redis.connection.AbstractConnection],
        max_entries: int,
        confirm_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._max_entries = max_entries
        self._confirm_seconds = confirm_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._copies: dict[str, bytes] = {}
        self._connection: redis.connection.AbstractConnection | None = None
        self._probe: Callable[[], bool] | None = None  # see pending_bytes_probe
        self._confirmed_at = -math.inf
        this = weakref.ref(self)  # the fork hook must not keep a discarded instance alive
        os.register_at_fork(after_in_child=lambda: (copies := this()) is not None and copies._after_fork())

    def get(self, key: str) -> bytes | None:
        """The value of ``key`` (None if it has none), from memory while Redis has not changed it."""
        with self._lock:
            try:
                return self._get(key)
            except BaseException:
                self._drop_connection()
                raise

    def _get(self, key: str) -> bytes | None:
        connection = self._connected()
        if self._probe is None or self._probe():
            self._apply_pushes(connection)  # invalidations pushed since the last call
        now = self._clock()
        if now - self._confirmed_at > self._confirm_seconds:
            connection.send_command("PING")
            connection.read_response()  # pushes that arrive first are applied on the way
            self._apply_pushes(connection)
            self._confirmed_at = now
        try:
            return self._copies[key]
        except KeyError:
            pass
        connection.send_command("GET", key)
        value: bytes | None = connection.read_response()
        # An absent key is not kept: it is usually about to be filled, and that fill's invalidation
        # could still be on its way when the next read looks.
        if value is not None:
            if len(self._copies) >= self._max_entries:
                del self._copies[next(iter(self._copies))]  # the oldest: Redis still tracks it, harmlessly
            self._copies[key] = value
        self._apply_pushes(connection)  # one that came right behind the value may be about it
        return value

    @staticmethod
    def _apply_pushes(connection: redis.connection.AbstractConnection) -> None:
        """Read every push waiting in the parser's buffer or the socket (the handler applies it),
        so that afterwards only the socket can hold news."""
        while connection.can_read(timeout=0):
            connection.read_response(push_request=True)

    def forget(self, *keys: str) -> None:
        """Drop copies this process is changing itself, without waiting for Redis to say so."""
        with self._lock:
            for key in keys:
                self._copies.pop(key, None)

    def _connected(self) -> redis.connection.AbstractConnection:
        if self._connection is None:
            connection = self._connect()
            # Applies the invalidations Redis pushes (redis-py's parser hook, which its own
            # client-side cache uses too); set before any command can bring one.
            connection._parser.set_invalidation_push_handler(self._on_invalidation)  # type: ignore[attr-defined]
            connection.register_connect_callback(self._on_connect)
            self._connection = connection
        return self._connection

    def _on_connect(self, connection: redis.connection.AbstractConnection) -> None:
        """Every (re)connection: whatever changed while there was none was not heard of."""
        self._copies.clear()
        connection.send_command("CLIENT", "TRACKING", "ON")
        self._probe = pending_bytes_probe(connection)  # while the reply waits, unread
        if connection.read_response() not in (b"OK", "OK"):
            raise redis.ConnectionError("Redis refused CLIENT TRACKING")
        self._confirmed_at = self._clock()

    def _on_invalidation(self, message: list[Any]) -> None:
        keys = message[1]
        if keys is None:  # FLUSHDB/FLUSHALL
            self._copies.clear()
            return
        for key in keys:
            self._copies.pop(key.decode() if isinstance(key, bytes) else key, None)

    def _drop_connection(self) -> None:
        self._copies.clear()
        self._probe = None
        self._confirmed_at = -math.inf
        if self._connection is not None:
            self._connection.disconnect()
            self._connection = None

    def _after_fork(self) -> None:
        """A forked child must not share its parent's socket, nor copies it was not told about."""
        self._lock = threading.Lock()
        self._copies = {}
        self._connection = None
        self._probe = None
        self._confirmed_at = -math.inf

    def close(self) -> None:
        with self._lock:
            self._drop_connection()


_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux >= 4.6; 55 in asm-generic (x86-64, arm64)


def pending_bytes_probe(connection: redis.connection.AbstractConnection) -> Callable[[], bool] | None:
    """A check, without a read, of whether unread bytes wait in the connection's socket; None when
    the kernel will not tell (then every use reads the socket to find out).

    Called while a reply is known to be on its way. Reading a socket (even a non-blocking recv
    that finds nothing) releases the GIL, and in a threaded worker under load getting it back cost
    ~70 us per request on the benchmark stack (A/B: 0.80 vs 0.73 ms of CPU per cached read), far
    more than the call itself; ``getsockopt(SO_MEMINFO)`` keeps the GIL and reports the bytes the
    socket's receive queue holds (its first field). Plain TCP only: a UNIX socket charges its
    queue to the sender, and TLS can hold decrypted bytes in user space.
    """
    sock = getattr(connection, "_sock", None)  # redis-py keeps the socket there; else no probe
    if type(sock) is not socket.socket or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None

    def unread_bytes_waiting() -> bool:
        return struct.unpack_from("I", sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 36))[0] != 0

    try:
        select.select([sock], [], [], 1.0)  # the reply has arrived...
        if not unread_bytes_waiting():  # ...so a probe that works reports it
            return None
    except OSError:
        return None
    return unread_bytes_waiting


def tracked_copies(settings: CommonSettings, max_entries: int, confirm_seconds: float) -> TrackedCopies:
    """:class:`TrackedCopies` of the configured Redis, on a RESP3 connection of their own."""
    pool = redis.ConnectionPool.from_url(str(settings.redis_url), protocol=3, **_connection_options(settings))
    return TrackedCopies(pool.make_connection, max_entries, confirm_seconds)


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
