"""JSON log lines on stdout with the service name and the request id nginx assigned."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import weakref
from typing import Any, TextIO, cast

from flask import g, has_request_context

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is emitted.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# One encoder for every line (json.dumps with options would build a new one per call).
_encode = json.JSONEncoder(default=str, check_circular=False).encode


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second: tuple[int, str] = (-1, "")  # the last whole second, formatted once

    def _timestamp(self, created: float) -> str:
        """``2026-01-02T03:04:05.678Z`` (UTC, milliseconds)."""
        second, text = self._second
        whole = int(created)
        if whole != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, text)
        return f"{text}.{int((created - whole) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: value for key, value in vars(record).items() if key not in _RESERVED}
        entry = self.entry(record.levelname, record.name, record.getMessage(), fields, record.created)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)

    def entry(self, level: str, logger: str, message: str, fields: dict[str, Any], created: float) -> dict[str, Any]:
        """The members of one line, in order; the request's id and account when there is one."""
        entry: dict[str, Any] = {
            "time": self._timestamp(created),
            "level": level.lower(),
            "service": self.service,
            "logger": logger,
            "message": message,
        }
        if has_request_context():
            request_id = g.get("request_id")
            if request_id:
                entry["request_id"] = request_id
            account_id = g.get("account_id")
            if account_id:
                entry["account_id"] = account_id
        entry.update(fields)
        return entry


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """Writes lines in batches: at most every ``flush_seconds``, at once when ``max_bytes`` wait, and
    at once for a WARNING or worse (with everything before it, so the order holds).

    One write per line was the largest single cost of a cached read: the line's own system call,
    and the container runtime woken to copy it, for every request (A/B on the benchmark stack:
    ~150 us of CPU per request, ~20% of the throughput). nginx's ``access_log ... buffer= flush=``
    makes the same trade: a hard kill of the process loses at most the last ``flush_seconds`` of
    INFO lines; a normal exit flushes them.
    """

    def __init__(self, stream: TextIO, flush_seconds: float = 0.5, max_bytes: int = 64 * 1024) -> None:
        super().__init__(stream)
        self.flush_seconds = flush_seconds
        self.max_bytes = max_bytes
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._flusher_pid = 0  # the process whose flusher thread runs (threads do not survive fork)
        # A forked child must not write what its parent already had pending: the parent writes it
        # first. (Weakly: the hook must not keep a discarded handler, or its closed stream, alive.)
        this = weakref.ref(self)
        os.register_at_fork(before=lambda: (handler := this()) is not None and handler.flush_quietly())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging must never raise into the caller (Handler.handleError reports it)
            self.handleError(record)
            return
        if not self.write_line(line, urgent=record.levelno >= logging.WARNING):
            self.handleError(record)  # like StreamHandler.emit: reported, never raised into the caller

    def write_line(self, line: str, *, urgent: bool) -> bool:
        """Queue one formatted line (written at once if ``urgent``); False if a write failed."""
        line += self.terminator
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            if self._flusher_pid != os.getpid():
                self._start_flusher()
            self._pending.append(line)
            self._pending_bytes += len(line)
            if urgent or self._pending_bytes >= self.max_bytes:
                try:
                    self._write_pending()
                except Exception:
                    return False
        return True

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            text, self._pending, self._pending_bytes = "".join(self._pending), [], 0
            self.stream.write(text)
        self.stream.flush()

    def _start_flusher(self) -> None:
        self._flusher_pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="log-flusher", daemon=True).start()

    def flush_quietly(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # stdout closed or broken: nowhere to report it
            self.flush()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush_quietly()


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """``logger.log(level, message, extra=fields)``: the same line, but straight to the batching
    handler when it is the only place the line would go (no LogRecord, no formatter scanning one).
    The request line of every request takes this path: through Logger.log it was ~24 us of the
    ~110 a cached read took in one worker, which took ~95 this way. Anything else configured on
    the way (a test's capturing handler, a filter) gets the record as usual."""
    if not logger.isEnabledFor(level):
        return
    handler = _only_batching_handler(logger)
    if handler is None:
        logger.log(level, message, extra=fields)
        return
    if level < handler.level:
        return
    formatter = cast(JsonFormatter, handler.formatter)
    entry = formatter.entry(logging.getLevelName(level), logger.name, message, fields, time.time())
    handler.write_line(_encode(entry), urgent=level >= logging.WARNING)


def _only_batching_handler(logger: logging.Logger) -> BatchingStreamHandler | None:
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    if len(found) != 1:
        return None
    handler = found[0]
    if type(handler) is not BatchingStreamHandler or handler.filters or type(handler.formatter) is not JsonFormatter:
        return None
    return handler


def configure_logging(service: str, level: str) -> None:
    """Route the root logger (and gunicorn's) to one JSON handler on stdout."""
    # Thread, process and task names are never emitted: do not look them up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False
    # Nor where each call came from (file, line, function): finding it walks the caller's frames.
    logging._srcfile = None  # type: ignore[attr-defined]  # the documented switch (logging HOWTO, Optimization)
    root = logging.getLogger()
    reusable = [h for h in root.handlers if isinstance(h, BatchingStreamHandler) and h.stream is sys.stdout]
    handler = reusable[0] if reusable else BatchingStreamHandler(sys.stdout)  # one flusher per process
    handler.setFormatter(JsonFormatter(service))
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
