"""JSON log lines on stdout with the service name and the request id nginx assigned.

Every record goes through the standard library's ``logging``: the root logger's one handler is a
:class:`logging.handlers.QueueHandler`, which formats the line in the thread that logged it (so
the request's id and account are at hand) and queues it; a :class:`~logging.handlers.QueueListener`
thread writes the queued lines to stdout, so no request waits for the write.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import queue
import sys
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is emitted.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            if request_id := g.get("request_id"):
                entry["request_id"] = request_id
            if account_id := g.get("account_id"):
                entry["account_id"] = account_id
        entry.update((key, value) for key, value in vars(record).items() if key not in _RESERVED)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_listener: logging.handlers.QueueListener | None = None


def _start_listener(handler: logging.handlers.QueueHandler) -> None:
    """A fresh queue and writer thread (also in a forked child: threads do not survive a fork)."""
    global _listener
    handler.queue = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(handler.queue, logging.StreamHandler(sys.stdout))
    _listener.start()


def _stop_listener() -> None:
    """Write what is still queued (at exit)."""
    if _listener is not None:
        _listener.stop()


def configure_logging(service: str, level: str) -> None:
    """Route the root logger (and gunicorn's) to one JSON queue handler."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, logging.handlers.QueueHandler)), None)
    if handler is None:  # once per process, however many apps it creates
        handler = logging.handlers.QueueHandler(queue.SimpleQueue())
        _start_listener(handler)
        os.register_at_fork(after_in_child=lambda: _start_listener(handler))
        atexit.register(_stop_listener)
    handler.setFormatter(JsonFormatter(service))
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
