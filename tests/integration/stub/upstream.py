"""A stand-in upstream for the edge tests, run inside a container behind the real nginx image.

Every request it receives is printed as one JSON line (so a test can count what nginx sent, and
on which connection: ``peer`` is nginx's address and port); ``/fail...`` answers 502, ``/slow...``
answers after ``STUB_SLOW`` seconds, ``/big/<n>`` answers a body of ``n`` bytes, anything else 200
with the container's host name and the request headers it got. Every answer carries the headers
that reveal software versions (``Server`` and ``X-Powered-By``), as many frameworks send them.
"""

import json
import os
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        print(json.dumps({"hit": self.command, "path": self.path, "peer": peer}), flush=True)
        if self.path.startswith("/slow"):
            time.sleep(float(os.environ.get("STUB_SLOW", "3")))
        status = 502 if self.path.startswith("/fail") else 200
        content_type = "application/json"
        if self.path.startswith("/big/"):
            body, content_type = b"x" * int(self.path.removeprefix("/big/")), "application/octet-stream"
        else:
            body = json.dumps({"host": socket.gethostname(), "headers": dict(self.headers)}).encode()
        self.send_response(status)  # also sends Server: BaseHTTP/<version> Python/<version>
        self.send_header("X-Powered-By", "Stub/1.2.3")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # http.server's names for the method handlers.
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)  # noqa: S104 - inside a test container
print(json.dumps({"listening": socket.gethostname()}), flush=True)
server.serve_forever()
