"""HTTP/2 on the TLS listener: ALPN picks h2, and every answer (headers, limits, problem+json
errors) is the one HTTP/1.1 gets for the same request. On the session stack, with its development
certificate (for localhost and 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import ssl
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import requests
from h2 import events as h2_events
from h2.config import H2Configuration
from h2.connection import H2Connection

from .conftest import Stack, wait_for_whole_sign_in_allowance

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
# What the edge adds to every answer; compared between HTTP/1.1 and HTTP/2.
EDGE_HEADERS = (
    "Content-Type",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "X-Frame-Options",
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "Cache-Control",
    "Retry-After",
    "Allow",
    "Server",
)


def _context(stack: Stack, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=stack.secrets_dir / "nginx" / "tls.crt")
    context.set_alpn_protocols(alpn)
    return context


@pytest.fixture
def h2(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        http1=False, http2=True, verify=_context(stack, ["h2"]), base_url=stack.https_url, trust_env=False, timeout=15
    ) as client:
        yield client


@pytest.fixture
def h1(stack: Stack) -> Iterator[requests.Session]:
    session = requests.Session()
    session.verify = str(stack.secrets_dir / "nginx" / "tls.crt")
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, where set, wins over `verify`
    yield session
    session.close()


def _negotiated(stack: Stack, offered: list[str]) -> str | None:
    host, port = stack.https_url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        _context(stack, offered).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.selected_alpn_protocol()


def test_alpn_picks_h2_and_http1_clients_still_get_http1(stack: Stack) -> None:
    assert _negotiated(stack, ["h2", "http/1.1"]) == "h2"
    assert _negotiated(stack, ["http/1.1"]) == "http/1.1"


def _edge_view(response: requests.Response | httpx.Response) -> tuple[int, dict[str, str | None], object]:
    """What must not depend on the protocol: status, the edge's headers, the body (a problem
    without its request id, which is the request's own)."""
    headers = {name: response.headers.get(name) for name in EDGE_HEADERS}
    body: object = response.content
    if response.headers.get("Content-Type") == PROBLEM:
        body = {k: v for k, v in response.json().items() if k != "request_id"}
        assert response.json()["request_id"] == response.headers["X-Request-ID"]
    return response.status_code, headers, body


LONG = "a" * 9000  # over the 8k request line: HTTP/2 has none, the edge holds it to the same limit
CASES: dict[str, tuple[str, str, dict[str, str], bytes | None, int]] = {
    "health": ("GET", "/api/healthz", {}, None, 200),
    "unknown route": ("GET", "/no/such/route", {}, None, 404),
    "method outside the API's": ("TRACE", "/api/users", {}, None, 405),
    "method on /healthz": ("POST", "/healthz", {}, b"{}", 405),
    "URI over 8k": ("GET", "/api/users/" + LONG, {}, None, 414),
    "internal endpoint": ("GET", "/auth/internal/revocations", {}, None, 404),
    "unauthenticated": ("GET", "/api/users", {}, None, 401),
}


@pytest.mark.parametrize("case", CASES)
def test_answers_over_h2_are_the_ones_http1_gets(
    stack: Stack, h1: requests.Session, h2: httpx.Client, case: str
) -> None:
    method, path, headers, body, status = CASES[case]
    over_h1 = h1.request(method, stack.https_url + path, headers=headers, data=body, timeout=15)
    over_h2 = h2.request(method, path, headers=headers, content=body)
    assert over_h2.http_version == "HTTP/2"
    assert over_h1.status_code == status, over_h1.text[:300]
    assert _edge_view(over_h2) == _edge_view(over_h1)
    if status >= 400 and over_h1.headers["Content-Type"] == PROBLEM:
        assert over_h2.json()["status"] == status


def test_a_body_over_the_limit_is_the_same_413_over_h2(stack: Stack, h1: requests.Session, h2: httpx.Client) -> None:
    too_large = 2 * 1024 * 1024  # NGINX_CLIENT_MAX_BODY_SIZE is 1m
    json = {"Content-Type": "application/json"}
    over_h1 = h1.post(stack.https_url + "/api/users", data=b"x" * too_large, headers=json, timeout=15)
    # httpx sends all of a body before it reads the answer, and nginx opens no flow-control window
    # for a body it has refused: so over h2 the request declares the length and sends a little.
    over_h2 = h2.post("/api/users", content=b"{}", headers={**json, "Content-Length": str(too_large)})
    assert over_h1.status_code == 413
    assert over_h2.http_version == "HTTP/2"
    assert _edge_view(over_h2) == _edge_view(over_h1)


def _streams_at_once(stack: Stack, path: str, body: object, count: int) -> list[httpx.Response]:
    """``count`` POSTs as streams of one HTTP/2 connection, every frame of them written at once
    before any answer is read. Spoken with the h2 library itself: an HTTP/2 client that sends a
    request's body after its headers may meet the edge's early answer in between (a 429 decided on
    the headers, the stream then reset with NO_ERROR, as RFC 9113 8.1 allows) and fail to send the
    rest (httpcore's LocalProtocolError: the stream is closed)."""
    host, port = stack.https_url.removeprefix("https://").rsplit(":", 1)
    payload = json.dumps(body).encode()
    request = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", f"localhost:{port}"),
        (":path", path),
        ("content-type", "application/json"),
        ("content-length", str(len(payload))),
    ]
    connection = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    connection.initiate_connection()
    streams = []
    for _ in range(count):
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, request)
        connection.send_data(stream, payload, end_stream=True)
        streams.append(stream)
    with (
        socket.create_connection((host, int(port)), timeout=15) as raw,
        _context(stack, ["h2"]).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(connection.data_to_send())
        return _answers(tls, connection, streams)


def _answers(tls: ssl.SSLSocket, connection: H2Connection, streams: list[int]) -> list[httpx.Response]:
    """Reads until every stream has its whole answer; a stream reset before its answer ended fails."""
    heads: dict[int, list[tuple[str, str]]] = {}
    bodies: dict[int, bytearray] = {stream: bytearray() for stream in streams}
    ended: set[int] = set()
    while len(ended) < len(streams):
        data = tls.recv(65536)
        assert data, f"the edge closed the connection with {len(streams) - len(ended)} answers missing"
        for event in connection.receive_data(data):
            if isinstance(event, h2_events.ResponseReceived):
                heads[event.stream_id] = list(event.headers)
            elif isinstance(event, h2_events.DataReceived):
                bodies[event.stream_id] += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2_events.StreamEnded):
                ended.add(event.stream_id)
            elif isinstance(event, h2_events.StreamReset):
                assert event.stream_id in ended, f"stream {event.stream_id} reset before its answer ended"
        tls.sendall(connection.data_to_send())
    return [_response(heads[stream], bytes(bodies[stream])) for stream in streams]


def _response(head: list[tuple[str, str]], body: bytes) -> httpx.Response:
    status = int(dict(head)[":status"])
    headers = [(name, value) for name, value in head if not name.startswith(":")]
    return httpx.Response(status, headers=headers, content=body, extensions={"http_version": b"HTTP/2"})


def test_the_sign_in_limit_answers_the_same_429_over_h2(stack: Stack, h1: requests.Session) -> None:
    """Streams multiplexed on one connection count one by one against the per-address limits, and
    the edge's 429 is the same over both protocols. An empty body is refused by auth (422) before
    any sign-in is attempted, so no limit of auth's answers: every 429 here is the edge's."""
    try:
        over_h2 = _streams_at_once(stack, "/auth/login", {}, 30)
        over_h1 = [h1.post(stack.https_url + "/auth/login", json={}, timeout=15) for _ in range(30)]
        statuses = Counter(r.status_code for r in over_h2)
        assert statuses[429] >= 1, statuses
        assert set(statuses) | {r.status_code for r in over_h1} <= {422, 429}, statuses
        limited_h2 = next(r for r in over_h2 if r.status_code == 429)
        limited_h1 = next(r for r in over_h1 if r.status_code == 429)  # the h2 streams left the bucket full
        assert limited_h2.http_version == "HTTP/2"
        assert _edge_view(limited_h2) == _edge_view(limited_h1)
        assert int(limited_h2.headers["Retry-After"]) >= 1
    finally:
        wait_for_whole_sign_in_allowance()


def test_header_limits_hold_over_h2_as_a_connection_error(stack: Stack, h1: requests.Session, h2: httpx.Client) -> None:
    """The same 8k limit on a header field; HTTP/1.1 gets 431 problem+json, while nginx's HTTP/2
    ends the connection (GOAWAY, ENHANCE_YOUR_CALM): the request never reaches a service."""
    big = {"X-Filler": "f" * 20_000}
    over_h1 = h1.get(stack.https_url + "/api/healthz", headers=big, timeout=15)
    assert over_h1.status_code == 431
    assert over_h1.headers["Content-Type"] == PROBLEM
    with pytest.raises(httpx.RemoteProtocolError):
        h2.get("/api/healthz", headers=big)
    assert h2.get("/api/healthz").status_code == 200  # a new connection works
