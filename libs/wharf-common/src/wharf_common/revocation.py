"""Revoked access tokens, known to every service without a round trip per request.

The auth service records each revocation durably in its own database and then announces it on
the Redis channel ``wharf:revocations``. Every process of every other service keeps the small set
of not-yet-expired revocations in memory: pushed entries arrive within milliseconds, and a full
re-sync from auth's internal endpoint (``GET /internal/revocations``, on the backend network only)
every few seconds repairs anything a lost message or a Redis outage missed.
A process whose last successful re-sync is older than ``max_staleness`` fails closed: it raises
:class:`RevocationsUnavailable` instead of trusting a token that may have been revoked.

Three kinds of entry: ``jti`` (one token, logout), ``family`` (every token of one login session,
``fid`` claim) and ``account`` (every token of an account issued before ``issued_before``,
password change).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from wharf_common.tokens import fetch_json

CHANNEL = "wharf:revocations"
KINDS = ("jti", "family", "account")
SYNC_SECONDS = 5.0  # how often every process re-reads the whole list

log = logging.getLogger(__name__)


class RevocationsUnavailable(Exception):
    """The revocation set is too old to be trusted."""


@dataclass(frozen=True)
class Revocation:
    kind: str
    value: str
    expires_at: float  # epoch seconds; after this the token is dead anyway
    issued_before: float | None = None  # epoch seconds, for kind "account"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "exp": self.expires_at, "issued_before": self.issued_before}

    def to_message(self) -> str:
        return json.dumps(self.to_json())

    @classmethod
    def from_message(cls, data: bytes | str) -> Revocation | None:
        try:
            return cls.from_json(json.loads(data))
        except ValueError:
            return None

    @classmethod
    def from_json(cls, item: Any) -> Revocation | None:
        try:
            revocation = cls(
                kind=str(item["kind"]),
                value=str(item["value"]),
                expires_at=float(item["exp"]),
                issued_before=None if item.get("issued_before") is None else float(item["issued_before"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if revocation.kind not in KINDS or (revocation.kind == "account") != (revocation.issued_before is not None):
            return None
        return revocation


def publish(client: redis.Redis, revocation: Revocation) -> None:
    """Announce a revocation that is already committed; a failure only delays it until the next re-sync."""
    try:
        client.publish(CHANNEL, revocation.to_message())
    except redis.RedisError as exc:
        log.warning("revocation not pushed (services pick it up on their next re-sync): %s", exc)


def loader(url: str) -> Callable[[], list[Revocation]]:
    """Fetches the whole list from the auth service's internal endpoint at ``url``."""
    fetch = fetch_json(url)

    def load() -> list[Revocation]:
        document = fetch()
        items = document.get("revocations") if isinstance(document, Mapping) else None
        if not isinstance(items, list):
            raise ValueError("the revocation list is malformed")
        revocations = [Revocation.from_json(item) for item in items]
        if None in revocations:
            raise ValueError("the revocation list holds a malformed entry")
        return revocations  # type: ignore[return-value]

    return load


class RevocationSet:
    """The in-memory set, kept fresh by a re-sync thread and a pub/sub listener (started lazily,
    once per process, so gunicorn workers forked from a preloaded app each get their own)."""

    def __init__(
        self,
        loader: Callable[[], list[Revocation]],
        redis_client: redis.Redis | None,
        *,
        sync_interval: float = SYNC_SECONDS,
        max_staleness: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._redis = redis_client
        self._sync_interval = sync_interval
        self._max_staleness = max_staleness
        self._clock = clock
        self._state = _State()  # replaced whole by a re-sync, never emptied in place
        self._pushed: list[tuple[float, Revocation]] = []  # arrivals, replayed over a racing re-sync
        self._synced_at: float | None = None
        self._subscribed_at: float | None = None  # while the channel listener is connected
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._started_pid: int | None = None
        self._stop = threading.Event()

    # -- reading -------------------------------------------------------------------------------

    def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        """Whether verified ``claims`` belong to a revoked token; raises when the set is stale."""
        self._ensure_started()
        if not self.is_fresh():
            raise RevocationsUnavailable("the revocation list is stale")
        return self._state.covers(claims)

    def is_fresh(self) -> bool:
        """Re-synced within ``max_staleness``, or subscribed to the channel without a break since
        before the last re-sync: then every later revocation has been pushed to us (auth publishes
        each one after its commit), so an outage of auth or Postgres alone does not make the set
        stale, and a Redis outage alone does not either (re-syncs go on)."""
        synced_at, subscribed_at = self._synced_at, self._subscribed_at
        if synced_at is None:
            return False
        if self._clock() - synced_at <= self._max_staleness:
            return True
        return subscribed_at is not None and subscribed_at <= synced_at

    def age(self) -> float | None:
        return None if self._synced_at is None else self._clock() - self._synced_at

    # -- writing -------------------------------------------------------------------------------

    def add(self, revocation: Revocation) -> None:
        with self._lock:
            self._state.apply(revocation)
            self._pushed.append((self._clock(), revocation))

    def sync(self) -> None:
        """Replace the set with auth's view of it (plus pushes that arrived meanwhile)."""
        with self._sync_lock:
            started = self._clock()
            rows = self._loader()
            state = _State()
            for revocation in rows:
                state.apply(revocation)
            with self._lock:
                # A push may describe a commit the query did not see yet; keep it until the next sync.
                self._pushed = [(t, r) for t, r in self._pushed if t >= started - 1.0]
                for _arrived, revocation in self._pushed:
                    state.apply(revocation)
                self._state = state  # one assignment: readers see the old set or the new, never half
                self._synced_at = started

    def _try_sync(self, what: str) -> None:
        """Re-sync, logging a failure: the staleness check is what fails closed."""
        try:
            self.sync()
        except Exception as exc:
            log.warning("%s failed: %s", what, exc)

    # -- background work -----------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._started_pid == os.getpid():
            return
        with self._start_lock:  # other request threads wait here for the first sync
            if self._started_pid == os.getpid():
                return
            self._synced_at = None  # a forked child must not trust its parent's copy
            self._try_sync("initial revocation sync")
            threading.Thread(target=self._sync_loop, name="revocation-sync", daemon=True).start()
            if self._redis is not None:
                threading.Thread(target=self._listen_loop, name="revocation-listen", daemon=True).start()
            self._started_pid = os.getpid()

    def stop(self) -> None:
        self._stop.set()

    def _sync_loop(self) -> None:
        # Until a first sync succeeds (auth may still be starting), every second.
        while not self._stop.wait(self._sync_interval if self._synced_at is not None else 1.0):
            self._try_sync("revocation sync")

    def _listen_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except (redis.RedisError, OSError) as exc:
                log.info("revocation channel unavailable, retrying in %.1f s: %s", backoff, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _listen(self) -> None:
        assert self._redis is not None
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            # Read the subscription's confirmation: from then on every publish reaches us.
            self._handle(pubsub.get_message(timeout=1.0))
            self._subscribed_at = self._clock()
            # Anything published while we were not subscribed is only at auth: catch up now.
            self._try_sync("revocation sync after subscribe")
            while not self._stop.is_set():
                self._handle(pubsub.get_message(timeout=1.0))
        finally:
            self._subscribed_at = None
            pubsub.close()

    def _handle(self, message: Mapping[str, Any] | None) -> None:
        if message and message.get("type") == "message":
            revocation = Revocation.from_message(message["data"])
            if revocation is not None:
                self.add(revocation)


class _State:
    """One consistent copy of the set: revoked jtis, families, and per-account cut-off times."""

    def __init__(self) -> None:
        self.jtis: dict[str, float] = {}
        self.families: dict[str, float] = {}
        self.accounts: dict[str, float] = {}

    def apply(self, revocation: Revocation) -> None:
        if revocation.kind == "jti":
            self.jtis[revocation.value] = revocation.expires_at
        elif revocation.kind == "family":
            self.families[revocation.value] = revocation.expires_at
        elif revocation.issued_before is not None:
            self.accounts[revocation.value] = max(self.accounts.get(revocation.value, 0.0), revocation.issued_before)

    def covers(self, claims: Mapping[str, Any]) -> bool:
        if claims.get("jti") in self.jtis or claims.get("fid") in self.families:
            return True
        issued_before = self.accounts.get(str(claims.get("sub")))
        return issued_before is not None and float(claims.get("iat", 0)) < issued_before
