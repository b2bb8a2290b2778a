"""The JSON log handler's batching: nothing lost, order kept, warnings never delayed."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

from wharf_common.logs import BatchingStreamHandler, JsonFormatter, log_fields


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def logger(stream: io.StringIO) -> Iterator[tuple[logging.Logger, BatchingStreamHandler]]:
    handler = BatchingStreamHandler(stream, flush_seconds=0.2, max_bytes=2000)
    handler.setFormatter(JsonFormatter("test"))
    log = logging.getLogger(f"test.batching.{id(stream)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log, handler
    log.handlers.clear()


def _messages(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]


def test_info_lines_wait_for_the_flusher_then_all_arrive_in_order(logger, stream) -> None:
    log, _ = logger
    for n in range(5):
        log.info("line %d", n)
    assert stream.getvalue() == ""  # batched, not written one by one
    deadline = time.monotonic() + 5
    while len(_messages(stream)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _messages(stream) == [f"line {n}" for n in range(5)]


def test_a_warning_is_written_at_once_after_what_came_before(logger, stream) -> None:
    log, _ = logger
    log.info("first")
    log.warning("trouble")
    assert _messages(stream) == ["first", "trouble"]


def test_a_full_batch_is_written_without_waiting(logger, stream) -> None:
    log, _ = logger
    for n in range(40):  # ~150 bytes a line: past max_bytes (2000) well before the end
        log.info("line %d", n)
    written = _messages(stream)
    assert written, "nothing written although the batch passed max_bytes"
    assert written == [f"line {n}" for n in range(len(written))]


def test_flush_writes_everything_pending(logger, stream) -> None:
    log, handler = logger
    log.info("pending")
    handler.flush()
    assert _messages(stream) == ["pending"]


def test_a_forked_child_does_not_write_its_parents_pending_lines_again(tmp_path) -> None:
    path = tmp_path / "log"
    with path.open("w", encoding="utf-8") as out:
        handler = BatchingStreamHandler(out, flush_seconds=60)
        handler.setFormatter(JsonFormatter("test"))
        record = logging.makeLogRecord({"msg": "before fork", "levelno": logging.INFO, "levelname": "INFO"})
        handler.handle(record)
        pid = os.fork()
        if pid == 0:  # the child: write what it has, then leave without the parent's exit handlers
            handler.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        handler.flush()
    assert [json.loads(line)["message"] for line in path.read_text().splitlines()] == ["before fork"]


def test_a_closed_stream_neither_raises_into_the_caller_nor_stops_the_flusher(monkeypatch) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)  # handleError stays quiet
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, flush_seconds=0.05)
    handler.setFormatter(JsonFormatter("test"))
    log = logging.getLogger("test.batching.closed")
    log.handlers[:] = [handler]
    log.propagate = False
    log.info("pending")
    stream.close()
    log.warning("written to a closed stream")  # must not raise
    time.sleep(0.2)  # the flusher meets the closed stream several times
    assert any(t.name == "log-flusher" and t.is_alive() for t in threading.enumerate())
    log.handlers.clear()


def test_log_fields_writes_the_line_logger_log_would(logger, stream) -> None:
    log, handler = logger
    fields = {"method": "GET", "route": "/users", "status": 200, "duration_ms": 1.5}
    log.info("GET /users 200", extra=fields)
    log_fields(log, logging.INFO, "GET /users 200", fields)
    handler.flush()
    through_logging, direct = (json.loads(line) for line in stream.getvalue().splitlines())
    assert direct.pop("time")
    assert through_logging.pop("time")
    assert direct == through_logging
    assert list(direct) == list(through_logging)  # same members, same order


def test_log_fields_respects_levels(logger, stream) -> None:
    log, handler = logger
    log_fields(log, logging.DEBUG, "below the logger's level", {})
    handler.setLevel(logging.WARNING)
    log_fields(log, logging.INFO, "below the handler's level", {})
    log_fields(log, logging.WARNING, "kept", {})  # and written at once
    assert _messages(stream) == ["kept"]


def test_log_fields_gives_other_handlers_the_record(logger, stream) -> None:
    log, handler = logger
    records: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = records.append  # type: ignore[method-assign]
    log.addHandler(capture)
    log_fields(log, logging.INFO, "seen by both", {"route": "/users"})
    handler.flush()
    assert _messages(stream) == ["seen by both"]
    assert [(r.getMessage(), r.route) for r in records] == [("seen by both", "/users")]  # type: ignore[attr-defined]
