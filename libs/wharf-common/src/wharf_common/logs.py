"""JSON log lines on stdout with the service name and the request id nginx assigned."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

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
        entry: dict[str, Any] = {
            "time": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            request_id = g.get("request_id")
            if request_id:
                entry["request_id"] = request_id
            account_id = g.get("account_id")
            if account_id:
                entry["account_id"] = account_id
        for key, value in vars(record).items():
            if key not in _RESERVED:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)


def configure_logging(service: str, level: str) -> None:
    """Route the root logger (and gunicorn's) to one JSON handler on stdout."""
    # Thread, process and task names are never emitted: do not look them up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
