"""A bounded, steady, mixed read/write load against the stack, counting every outcome.

Each worker thread loops over a list of operations at a fixed pace until the load is stopped, has
sent ``max_requests`` requests or has run ``max_seconds``; it stops by itself either way. Every
response is counted under ``<operation> <outcome>``, where the outcome is the status code (plus the
``X-Cache`` header of a 200, and ``problem``/``bare`` for a 5xx: whether it was problem+json, and for
a 503 with a ``Retry-After``), or the exception's class name when no response came back.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import requests

# An operation sends one request with the given session and returns its response.
Operation = Callable[[requests.Session], requests.Response]

# The edge's rate limits raised for a compose project that runs a load: its few clients send more
# than the per-address limits allow a single visitor.
RAISED_EDGE_LIMITS = {
    "NGINX_RATE": "5000r/s",
    "NGINX_BURST": "10000",
    "NGINX_AUTH_RATE": "500r/s",
    "NGINX_AUTH_BURST": "1000",
}


def until(predicate: Callable[[], bool], seconds: float, pause: float = 0.5) -> bool:
    """Whether ``predicate`` holds within ``seconds``, asked every ``pause`` seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(pause)
    return predicate()


def outcome_of(response: requests.Response) -> str:
    status = response.status_code
    if status == 200 and "X-Cache" in response.headers:
        return f"200 {response.headers['X-Cache']}"
    if status >= 500:
        well_formed = response.headers.get("Content-Type", "").startswith("application/problem+json")
        if status == 503:  # "come back later" must say when
            well_formed = well_formed and "Retry-After" in response.headers
        return f"{status} {'problem' if well_formed else 'bare'}"
    return str(status)


@dataclass
class Outcomes:
    """Counts by ``"<operation> <outcome>"``; thread-safe."""

    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, operation: str, outcome: str) -> None:
        with self._lock:
            self.counts[f"{operation} {outcome}"] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    @staticmethod
    def total(counts: Counter[str]) -> int:
        return sum(counts.values())

    @staticmethod
    def matching(counts: Counter[str], predicate: Callable[[str, str], bool]) -> Counter[str]:
        """The entries whose (operation, outcome) satisfy ``predicate``."""
        return Counter({k: v for k, v in counts.items() if predicate(*k.split(" ", 1))})


def is_success(outcome: str) -> bool:
    return outcome[:1] in {"2", "3"}


class Load:
    """``with Load(operations, ...) as load:`` runs the load for the block (or less, if a bound is hit)."""

    def __init__(
        self,
        operations: dict[str, Operation],
        *,
        threads: int = 4,
        pace_seconds: float = 0.02,
        max_requests: int = 20_000,
        max_seconds: float = 120.0,
        session: Callable[[], requests.Session] = requests.Session,
    ) -> None:
        """``session`` makes each thread's session (e.g. one that pins TLS settings)."""
        self.operations = operations
        self.new_session = session
        self.threads = threads
        self.pace = pace_seconds
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.outcomes = Outcomes()
        self._stop = threading.Event()
        self._sent = itertools.count(1)
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True, name=f"load-{index}")
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> Counter[str]:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
        return self.outcomes.snapshot()

    def _run(self, index: int) -> None:
        names = list(self.operations)
        session = self.new_session()
        session.headers["User-Agent"] = "wharf-load"
        try:
            for step in itertools.count(index):
                if self._stop.is_set() or time.monotonic() > self._deadline or next(self._sent) > self.max_requests:
                    return
                name = names[step % len(names)]
                started = time.monotonic()
                try:
                    outcome = outcome_of(self.operations[name](session))
                except requests.RequestException as exc:
                    outcome = type(exc).__name__
                self.outcomes.add(name, outcome)
                self._stop.wait(max(0.0, self.pace - (time.monotonic() - started)))
        finally:
            session.close()


def unique_email() -> str:
    return f"load-{uuid.uuid4().hex[:16]}@example.com"


@dataclass(frozen=True)
class FaultRow:
    """One line of the fault report: what was done, what the load saw, what was lost."""

    fault: str
    sent: int
    failed: int
    lost: int
    outcomes: Counter[str]


FAULT_REPORT: list[FaultRow] = []


def format_report(rows: list[FaultRow]) -> str:
    lines = [
        "| Fault | Requests during it | Failed | Data lost | Outcomes |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(row.outcomes.items()))
        lines.append(f"| {row.fault} | {row.sent} | {row.failed} | {row.lost} | {outcomes} |")
    return "\n".join(lines)
