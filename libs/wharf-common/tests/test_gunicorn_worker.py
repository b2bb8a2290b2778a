"""The draining worker under a real gunicorn: told to stop, it refuses new connections at once
(so nginx retries them on another replica, whatever the method) and still finishes what it took."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SLOW_APP = """
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(4)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--chdir", str(tmp_path), "--bind", f"127.0.0.1:{port}",
            "--worker-class", "wharf_common.gunicorn_worker.DrainingThreadWorker",
            "--workers", "2", "--threads", "2", "--graceful-timeout", "20", "slow_app:app",
        ]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while _refused(port):
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        yield server, port
    finally:
        server.kill()
        server.wait(timeout=10)


def test_a_stopping_worker_refuses_new_connections_and_finishes_in_flight_ones(
    gunicorn: tuple[subprocess.Popen[bytes], int],
) -> None:
    server, port = gunicorn
    answers: list[bytes] = []

    def slow_request() -> None:
        answers.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/slow", timeout=30).read())

    in_flight = threading.Thread(target=slow_request)
    in_flight.start()
    time.sleep(0.5)  # the slow request is being served
    server.send_signal(signal.SIGTERM)

    refused_while_in_flight = False
    while in_flight.is_alive() and not refused_while_in_flight:
        refused_while_in_flight = _refused(port)
        time.sleep(0.05)
    in_flight.join(timeout=30)

    assert refused_while_in_flight  # the stock gthread worker keeps its listener open until it exits
    assert answers == [b"done"]
    assert server.wait(timeout=30) == 0
