"""JSON log lines through the standard library's stream handler: fields, order, forks, exit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

# Each scenario runs in a fresh interpreter: configure_logging owns the process's root logger.
PRELUDE = """
import logging, os, sys
from flask import Flask, g
from wharf_common.logs import configure_logging
configure_logging("test", "INFO")
log = logging.getLogger("wharf.test")
"""


def _run(script: str) -> list[dict[str, object]]:
    code = PRELUDE + textwrap.dedent(script)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_line_carries_the_service_the_request_and_the_extra_fields() -> None:
    (line,) = _run("""
        app = Flask("t")
        with app.test_request_context():
            g.request_id, g.account_id = "req-12345678", "acct-1"
            log.info("GET /users 200", extra={"route": "/users", "status": 200})
    """)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert {k: v for k, v in line.items() if k != "time"} == {
        "level": "info",
        "service": "test",
        "logger": "wharf.test",
        "message": "GET /users 200",
        "request_id": "req-12345678",
        "account_id": "acct-1",
        "route": "/users",
        "status": 200,
    }


def test_lines_below_the_level_are_dropped_and_exceptions_are_formatted() -> None:
    lines = _run("""
        log.debug("not written")
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed")
    """)
    assert [line["message"] for line in lines] == ["failed"]
    assert "ZeroDivisionError" in lines[0]["exception"]


def test_every_queued_line_is_written_in_order_by_exit() -> None:
    lines = _run("""
        for i in range(2000):
            log.info("line %d", i)
    """)
    assert [line["message"] for line in lines] == [f"line {i}" for i in range(2000)]


def test_a_forked_child_writes_its_own_lines() -> None:
    lines = _run("""
        log.info("parent before fork")
        pid = os.fork()
        if pid == 0:
            log.info("child")
            logging.shutdown()
            sys.exit(0)  # atexit writes what the child queued
        os.waitpid(pid, 0)
        log.info("parent after fork")
    """)
    assert sorted(line["message"] for line in lines) == ["child", "parent after fork", "parent before fork"]
