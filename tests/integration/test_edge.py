"""Issue 5 acceptance: the nginx edge, checked from outside through the real nginx container.

Two kinds of test. Those on the composed stack (``stack``) check the edge in front of the real
services. Those on the ``lab`` start the same nginx image beside small stub upstreams
(``stub/upstream.py``), with the tunable limits turned down, so that every limit, timeout and
retry can be observed exactly: what nginx sent to which replica, and how often. Loads are bounded
in count and time; timings are never asserted.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import socket
import ssl
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import requests

from .conftest import Stack, container_ip, docker, edge_defaults, psql_as_api, sign_in, wait_healthy
from .load import until

# own_project: the lab (its tests on the composed stack go with the stack's: tests/conftest.py)
pytestmark = [pytest.mark.integration, pytest.mark.own_project(minutes=1.5)]

IMAGE_PREFIX = os.environ.get("WHARF_IMAGE_PREFIX", "wharf")
TAG = os.environ.get("WHARF_TAG", "dev")
NGINX_IMAGE = f"{IMAGE_PREFIX}/nginx:{TAG}"
STUB_IMAGE = f"{IMAGE_PREFIX}/api:{TAG}"  # any image with python3 will do
STUB_SCRIPT = Path(__file__).parent / "stub" / "upstream.py"
PROBLEM = "application/problem+json"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
# `product/version` in a header value (`Server: gunicorn/23.0`, `X-Powered-By: PHP/8.3`).
VERSION_IN_HEADER = re.compile(r"[A-Za-z]/\d")


def _json_lines(text: str) -> list[dict[str, object]]:
    entries = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


def _assert_problem(response: requests.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == PROBLEM, response.headers
    body = response.json()
    assert body["status"] == status
    assert str(body["type"]).startswith("https://wharf.dev/problems/")
    assert body["title"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def _nginx_logs(stack: Stack) -> tuple[str, str]:
    result = docker("logs", stack.container_id("nginx"))
    return result.stdout, result.stderr


# --- On the composed stack ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("HEAD", "/healthz", 200),
        ("GET", "/api/healthz", 200),
        ("GET", "/auth/healthz", 200),
        ("GET", "/", 404),
        ("GET", "/apix", 404),
        ("GET", "/missing.js", 404),  # problem+json, not a type guessed from the extension
        ("POST", "/nowhere/at/all", 404),
        ("POST", "/healthz", 405),
        ("TRACE", "/api/users", 405),
        ("TRACE", "/auth/login", 405),
        ("TRACE", "/healthz", 405),
        ("TRACE", "/", 405),
        ("TRACE", "/nowhere", 405),
        ("TRACE", "/docs/", 405),
        ("TRACE", "/auth/.well-known/jwks.json", 405),
        ("DELETE", "/api/users", 405),  # the api's own 405: the collection cannot be deleted
        ("PATCH", "/api/users", 405),
        ("PROPFIND", "/api/users", 405),
        ("CONNECT", "/api/users", 405),
    ],
)
def test_routing(stack: Stack, http: requests.Session, method: str, path: str, status: int) -> None:
    response = http.request(method, stack.base_url + path, timeout=5)
    assert response.status_code == status, response.text
    if status >= 400:
        _assert_problem(response, status)
    if status == 405:
        assert "GET" in response.headers["Allow"]
        assert method not in response.headers["Allow"]
    if path == "/healthz" and method == "GET":
        assert response.json() == {"status": "ok"}  # answered by nginx itself


def test_service_errors_pass_through_unchanged(stack: Stack, http: requests.Session) -> None:
    # A 404 and a 405 made by a service are the service's own problem+json, not nginx's.
    headers = sign_in(stack, http)
    missing = http.get(f"{stack.base_url}/api/users/{uuid.uuid4()}", headers=headers, timeout=5)  # no such user
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == PROBLEM
    wrong_method = http.put(stack.base_url + "/auth/login", json={}, timeout=5)
    _assert_problem(wrong_method, 405)
    assert "POST" in wrong_method.headers["Allow"]
    assert "PUT" not in wrong_method.headers["Allow"]


def test_security_headers_on_every_response(stack: Stack, http: requests.Session) -> None:
    responses = {
        "ok": http.get(stack.base_url + "/api/healthz", timeout=5),
        "nginx-ok": http.get(stack.base_url + "/healthz", timeout=5),
        "not-found": http.get(stack.base_url + "/nope", timeout=5),
        "service-error": http.post(stack.base_url + "/api/users", json={}, timeout=5),
        "method": http.request("TRACE", stack.base_url + "/api/users", timeout=5),
        "too-large": http.post(stack.base_url + "/api/users", data=b"x" * (2 * 1024 * 1024), timeout=10),
        "auth-service-error": http.get(stack.base_url + "/auth/me", timeout=5),
        "jwks": http.get(stack.base_url + "/auth/.well-known/jwks.json", timeout=5),
    }
    for name, response in responses.items():
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (name, header, response.headers)
        assert response.headers.get("Server") == "nginx", name  # no version, never gunicorn
        assert "X-Powered-By" not in response.headers, name
        revealing = [f"{k}: {v}" for k, v in response.headers.items() if VERSION_IN_HEADER.search(v)]
        assert not revealing, (name, revealing)
        assert "nginx/" not in response.text, name
        assert "Strict-Transport-Security" not in response.headers, name  # plain HTTP
        assert response.headers["X-Request-ID"], name


def test_auth_responses_are_not_stored_but_jwks_is_cacheable(stack: Stack, http: requests.Session) -> None:
    for response in (
        http.get(stack.base_url + "/auth/healthz", timeout=5),
        http.post(stack.base_url + "/auth/login", json={}, timeout=5),
        http.get(stack.base_url + "/auth/me", timeout=5),
    ):
        assert response.headers.get("Cache-Control") == "no-store", response.url
    jwks = http.get(stack.base_url + "/auth/.well-known/jwks.json", timeout=5)
    assert jwks.status_code == 200
    assert "max-age" in jwks.headers["Cache-Control"]
    assert "no-store" not in jwks.headers["Cache-Control"]
    assert "Cache-Control" not in http.get(stack.base_url + "/api/healthz", timeout=5).headers


def test_request_id_echoed_and_logged_by_nginx_and_the_service(stack: Stack, http: requests.Session) -> None:
    request_id = f"it-{uuid.uuid4().hex}"
    spoofed = "203.0.113.99"
    response = http.post(
        stack.base_url + "/auth/login",
        json={"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "x" * 20},
        headers={"X-Request-ID": request_id, "X-Forwarded-For": spoofed, "X-Real-IP": spoofed},
        timeout=10,
    )
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == request_id
    assert response.json().get("request_id", request_id) == request_id

    # Malformed ids (bad characters, too short, too long) are replaced, never echoed.
    for bad in ("has space", "<script>", "short", "x" * 129):
        echoed = http.get(stack.base_url + "/api/healthz", headers={"X-Request-ID": bad}, timeout=5)
        assert echoed.headers["X-Request-ID"] != bad
        assert len(echoed.headers["X-Request-ID"]) == 32

    # Without one, nginx makes the id, and the service logs that same id.
    made = http.post(stack.base_url + "/auth/login", json={}, timeout=10)
    assert made.status_code == 422, made.text
    made_id = made.headers["X-Request-ID"]
    assert len(made_id) == 32
    assert made.json()["request_id"] == made_id

    deadline = time.monotonic() + 10
    while True:
        access, _ = _nginx_logs(stack)
        mine = [e for e in _json_lines(access) if e.get("request_id") == request_id]
        service = stack.compose("logs", "--no-color", "--no-log-prefix", "auth").stdout
        events = [e for e in _json_lines(service) if e.get("request_id") == request_id]
        made_events = [e for e in _json_lines(service) if e.get("request_id") == made_id]
        made_access = [e for e in _json_lines(access) if e.get("request_id") == made_id]
        if (mine and events and made_events and made_access) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(mine) == 1, access[-2000:]
    assert len(made_access) == 1, access[-2000:]
    assert made_events, "the auth service did not log the id nginx made"
    line = mine[0]
    assert {
        "time",
        "request_id",
        "client_ip",
        "method",
        "path",
        "status",
        "bytes",
        "request_time",
        "upstream_addr",
        "upstream_time",
    } <= set(line)
    assert (line["method"], line["path"], line["status"]) == ("POST", "/auth/login", 401)
    assert str(line["upstream_addr"]).endswith(":8000")
    assert events, "the auth service did not log the request id"
    # The service saw the client address nginx saw, not the spoofed one.
    assert line["client_ip"] != spoofed
    assert [e for e in events if "client_ip" in e], events
    assert all(e.get("client_ip") == line["client_ip"] for e in events if "client_ip" in e), events


def test_access_log_on_stdout_errors_on_stderr(stack: Stack, http: requests.Session) -> None:
    path = "/nope-" + uuid.uuid4().hex
    http.get(stack.base_url + path, timeout=5)
    deadline = time.monotonic() + 10  # lines are written in batches, at least every second
    while True:
        stdout, stderr = _nginx_logs(stack)
        if [e for e in _json_lines(stdout) if e.get("path") == path] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [e for e in _json_lines(stdout) if e.get("path") == path], "no JSON access log line on stdout"
    assert not _json_lines(stderr), "access log lines on stderr"
    assert all(not line.startswith("{") for line in stderr.splitlines())


def test_body_over_the_limit_is_413(stack: Stack, http: requests.Session) -> None:
    too_big = b'{"name":"' + b"x" * (1024 * 1024 + 1) + b'"}'
    response = http.post(
        stack.base_url + "/api/users", data=too_big, headers={"Content-Type": "application/json"}, timeout=10
    )
    _assert_problem(response, 413)


def test_headers_over_the_limit_are_431_and_long_uris_414(stack: Stack, http: requests.Session) -> None:
    response = http.get(stack.base_url + "/api/healthz", headers={"X-Padding": "a" * 9000}, timeout=5)
    _assert_problem(response, 431)
    long_uri = http.get(stack.base_url + "/api/" + "a" * 9000, timeout=5)
    _assert_problem(long_uri, 414)


def test_login_rate_limit_is_not_dodged_by_spoofed_forwarded_for(stack: Stack) -> None:
    defaults = edge_defaults()
    burst = int(defaults["NGINX_AUTH_BURST"])
    per_second = float(defaults["NGINX_AUTH_RATE"].removesuffix("r/s"))
    statuses: list[int] = []
    with requests.Session() as session:
        for i in range(burst * 2):
            # A different forged client address on every request; `{}` is rejected cheaply by the
            # service (no password hashing, no failed-login count) when nginx lets it through.
            forged = f"198.51.100.{i + 1}"
            response = session.post(
                stack.base_url + "/auth/login",
                json={},
                headers={"X-Forwarded-For": forged, "X-Real-IP": forged, "Forwarded": f"for={forged}"},
                timeout=10,
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                _assert_problem(response, 429)
                assert int(response.headers["Retry-After"]) >= 1
                assert response.headers["Cache-Control"] == "no-store"
    counts = Counter(statuses)
    assert counts[429] >= burst // 2, counts
    assert not [s for s in statuses if s >= 500], counts
    # Leave the strict bucket full again for the tests that log in after this one.
    time.sleep(burst / per_second + 1)


def test_json_is_gzipped_above_a_small_size(stack: Stack, http: requests.Session) -> None:
    http.headers.update(sign_in(stack, http))
    for i in range(12):
        created = http.post(
            stack.base_url + "/api/users",
            json={"name": f"Gzip Person {i:02d}", "email": f"gzip-{uuid.uuid4().hex[:10]}@example.com"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
    gzip = {"Accept-Encoding": "gzip"}
    listed = http.get(stack.base_url + "/api/users", headers=gzip, timeout=10, stream=True)
    assert listed.status_code == 200
    assert listed.headers.get("Content-Encoding") == "gzip"
    assert "Accept-Encoding" in listed.headers.get("Vary", "")
    listed.close()
    small = http.get(stack.base_url + "/healthz", headers=gzip, timeout=5)
    assert "Content-Encoding" not in small.headers
    # Never under /auth/ (token responses: no compression side channel).
    auth = http.get(stack.base_url + "/auth/.well-known/jwks.json", headers=gzip, timeout=5)
    assert "Content-Encoding" not in auth.headers


def _tls_context(cafile: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated in Python too: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    # Let the client itself offer old protocols, so that a refusal can only come from nginx.
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def _handshake(url: str, context: ssl.SSLContext) -> str:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := tls.recv(4096):
            response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        return str(tls.version())


def test_tls_with_the_dev_certificate_12_and_13_only(stack: Stack) -> None:
    cafile = stack.secrets_dir / "nginx" / "tls.crt"
    assert cafile.exists(), "dev-secrets did not write the nginx certificate"
    assert _handshake(stack.https_url, _tls_context(cafile, ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    assert _handshake(stack.https_url, _tls_context(cafile, ssl.TLSVersion.TLSv1_3)) == "TLSv1.3"
    for old in ("TLSv1", "TLSv1_1"):
        with pytest.raises(ssl.SSLError) as refused:
            _handshake(stack.https_url, _tls_context(cafile, getattr(ssl.TLSVersion, old)))
        # The server's alert, not a client that could not even offer the old protocol.
        assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value

    # The certificate also names 127.0.0.1, so verification works on the address too.
    response = requests.get(stack.https_url + "/api/healthz", verify=cafile, timeout=5)
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    for header, value in SECURITY_HEADERS.items():
        assert response.headers[header] == value
    traced = requests.request("TRACE", stack.https_url + "/api/users", verify=cafile, timeout=5)
    _assert_problem(traced, 405)
    assert traced.headers["Strict-Transport-Security"].startswith("max-age=")


def test_replica_killed_under_load_loses_only_answers_begun_and_its_return_is_noticed(
    stack: Stack, http: requests.Session
) -> None:
    token = sign_in(stack, http)
    http.headers.update(token)
    created = http.post(
        stack.base_url + "/api/users",
        json={"name": "Under Load", "email": f"load-{uuid.uuid4().hex[:10]}@example.com"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    url = stack.base_url + created.headers["Location"]
    nginx_started = docker("inspect", "-f", "{{.State.StartedAt}}", stack.container_id("nginx")).stdout
    victim = stack.compose("ps", "-q", "api").stdout.split()[0]

    workers, per_worker = 4, 60  # 240 GETs, paced to stay well under the general rate limit
    statuses: list[int | str] = []
    posts: list[int | str] = []
    prefix = f"kill-{uuid.uuid4().hex[:8]}-"
    lock = threading.Lock()

    def load() -> None:
        with requests.Session() as session:
            session.headers.update(token)
            for _ in range(per_worker):
                try:
                    status: int | str = session.get(url, timeout=15).status_code
                except requests.RequestException as exc:
                    status = type(exc).__name__
                with lock:
                    statuses.append(status)
                time.sleep(0.05)

    def write() -> None:
        # Each POST a new unique email: were nginx to send one twice, the second copy would be 409.
        with requests.Session() as session:
            session.headers.update(token)
            for i in range(40):
                try:
                    status: int | str = session.post(
                        stack.base_url + "/api/users",
                        json={"name": "Killed Writer", "email": f"{prefix}{i}@example.com"},
                        timeout=15,
                    ).status_code
                except requests.RequestException as exc:
                    status = type(exc).__name__
                posts.append(status)
                time.sleep(0.08)

    threads = [threading.Thread(target=load) for _ in range(workers)] + [threading.Thread(target=write)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        docker("kill", victim)  # SIGKILL: no graceful drain, connections die mid-flight
        for thread in threads:
            thread.join(timeout=120)
        print(f"GETs: {dict(Counter(statuses))}; POSTs: {dict(Counter(posts))}")
        assert len(statuses) == workers * per_worker
        # nginx sends a GET the dead replica did not answer to the other one. Only a response a
        # killed worker had begun is lost: gunicorn writes the headers and the body in two calls,
        # and nginx cannot retry what it has started to pass on (the body arrives cut short). A
        # sync worker answers one request at a time: at most one per worker of the replica.
        cut = statuses.count("ChunkedEncodingError")
        expected = Counter({200: workers * per_worker - cut, "ChunkedEncodingError": cut})
        assert Counter(statuses) == expected, Counter(statuses)
        assert cut <= int(stack.env.get("GUNICORN_WORKERS", "3")), Counter(statuses)
        # A POST caught in the killed replica may fail (502: nginx does not re-send it); none is
        # sent twice (no 409), and the table holds one row per POST at most.
        assert len(posts) == 40
        assert set(posts) <= {201, 502}, Counter(posts)
        counted = psql_as_api(stack, f"SELECT count(*) FROM api.users WHERE email LIKE '{prefix}%'")
        assert counted.returncode == 0, counted.stderr
        rows = int(counted.stdout)
        assert posts.count(201) <= rows <= len(posts), (rows, Counter(posts))
        assert http.get(url, timeout=10).status_code == 200
    finally:
        docker("start", victim, check=False)
        wait_healthy(victim)

    # The replica is back (with whatever address Docker gave it): nginx sends it traffic again,
    # without having been restarted.
    victim_address = container_ip(victim, f"{stack.project}_backend") + ":8000"
    deadline = time.monotonic() + 45
    seen: set[str] = set()
    while victim_address not in seen and time.monotonic() < deadline:
        for _ in range(10):
            assert http.get(url, timeout=10).status_code == 200
        access, _ = _nginx_logs(stack)
        seen = {str(e.get("upstream_addr")) for e in _json_lines(access)[-50:]}
        time.sleep(0.5)
    assert victim_address in seen, (victim_address, seen)
    assert docker("inspect", "-f", "{{.State.StartedAt}}", stack.container_id("nginx")).stdout == nginx_started


# --- In the lab: the nginx image beside stub upstreams ------------------------------------------


@dataclass
class Edge:
    container: str
    base_url: str
    https_url: str | None = None

    def logs(self) -> tuple[str, str]:
        result = docker("logs", self.container)
        return result.stdout, result.stderr

    def wait_for_error_log(self, text: str, after: str = "") -> None:
        """Until ``text`` is in nginx's error log (stderr), after the last ``after`` when given: Docker
        delivers a container's output a little later, and the edge writes some lines after what they
        report has taken effect (a reload's line follows the reload)."""

        def logged() -> bool:
            log = self.logs()[1]
            if not after:
                return text in log
            return after in log and text in log.rsplit(after, 1)[1]

        assert until(logged, 10, pause=0.2), (
            f"no {text!r} after {after!r} in nginx's error log:\n{self.logs()[1][-2000:]}"
        )

    def logged(self, path: str) -> dict[str, object]:
        """nginx's access log line for the one request on ``path`` (waits a little for it)."""
        deadline = time.monotonic() + 10
        while not (lines := [e for e in _json_lines(self.logs()[0]) if e.get("path") == path]):
            assert time.monotonic() < deadline, f"no access log line for {path}"
            time.sleep(0.2)
        assert len(lines) == 1, lines
        return lines[0]


@dataclass
class Lab:
    """A private network with stub upstreams (alias ``api``) and nginx containers on it."""

    network: str
    containers: list[str] = field(default_factory=list)

    def add_stub(self, alias: str = "api", **env: str) -> str:
        name = f"{self.network}-stub-{uuid.uuid4().hex[:6]}"
        env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        docker(
            "run", "-d", "--name", name, "--network", self.network, "--network-alias", alias,
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
            "-v", f"{STUB_SCRIPT}:/stub/upstream.py:ro", *env_args,
            STUB_IMAGE, "python", "-u", "/stub/upstream.py",
        )  # fmt: skip
        self.containers.append(name)
        deadline = time.monotonic() + 30
        while '"listening"' not in docker("logs", name).stdout:
            if time.monotonic() > deadline:
                pytest.fail(f"stub {name} did not start: {docker('logs', name).stderr}")
            time.sleep(0.2)
        return name

    def remove(self, name: str) -> None:
        docker("rm", "-f", name, check=False)
        self.containers.remove(name)

    def received_all(self) -> list[tuple[str, dict[str, object]]]:
        """(stub, logged request) for every request the stubs received."""
        found = []
        for name in self.containers:
            if "-stub-" not in name:
                continue
            found += [(name, entry) for entry in _json_lines(self._settled_log(name)) if "hit" in entry]
        return found

    @staticmethod
    def _settled_log(stub: str) -> str:
        """The stub's log with every line it printed so far. Docker delivers a container's output a
        little later (more so on a busy machine), so the stub is sent a request of its own, printed
        after all the others, and its line is waited for; that request is left out of the log."""
        marker = f"/settled/{uuid.uuid4().hex}"
        fetch = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000{marker}').read()"
        docker("exec", stub, "python", "-c", fetch)
        deadline = time.monotonic() + 10
        while marker not in (log := docker("logs", stub).stdout):
            assert time.monotonic() < deadline, f"{stub} never logged {marker}"
            time.sleep(0.1)
        return "\n".join(line for line in log.splitlines() if marker not in line)

    def received(self, path: str) -> list[tuple[str, dict[str, object]]]:
        """(stub, logged request) for every request a stub received on exactly ``path``."""
        return [(name, entry) for name, entry in self.received_all() if entry.get("path") == path]

    def hits(self, path: str) -> list[tuple[str, str]]:
        """(stub, method) for every request a stub received on exactly ``path``."""
        return [(name, str(entry["hit"])) for name, entry in self.received(path)]

    def start_edge(self, volumes: tuple[str, ...] = (), run_args: tuple[str, ...] = (), **env: str) -> Edge:
        name = f"{self.network}-nginx-{uuid.uuid4().hex[:6]}"
        settings = {"API_UPSTREAM": "api:8000", "AUTH_UPSTREAM": "127.0.0.1:9", **env}
        env_args = [arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")]
        mounts = [arg for volume in volumes for arg in ("-v", volume)]
        docker(
            "run", "-d", "--name", name, "--network", self.network, "-p", "127.0.0.1::8080",
            "-p", "127.0.0.1::8443", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true", *run_args, *env_args, *mounts, NGINX_IMAGE,
        )  # fmt: skip
        self.containers.append(name)
        http_port = docker("port", name, "8080/tcp").stdout.split(":")[-1].strip()
        https_port = docker("port", name, "8443/tcp").stdout.split(":")[-1].strip()
        edge = Edge(name, f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(edge.base_url + "/healthz", timeout=2).status_code == 200:
                    return edge
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nginx {name} did not start:\n{docker('logs', name, check=False).stderr}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    project = os.environ.get("WHARF_IT_PROJECT", "wharf-it")
    lab = Lab(network=f"{project}-edge-lab-{uuid.uuid4().hex[:6]}")
    docker("network", "create", lab.network)
    try:
        lab.add_stub()
        lab.add_stub()
        yield lab
    finally:
        for name in list(lab.containers):
            docker("rm", "-f", name, check=False)
        docker("network", "rm", lab.network, check=False)


@pytest.fixture(scope="module")
def edge(lab: Lab) -> Edge:
    """nginx with a short upstream read timeout, shared by the tests whose replicas never fail."""
    return lab.start_edge(NGINX_PROXY_READ_TIMEOUT="1s")


@pytest.fixture
def fresh_edge(lab: Lab) -> Iterator[Edge]:
    """An nginx of its own, for a test that makes replicas fail: nginx then skips a failed replica
    for 5 s, which would change what the next test's requests reach."""
    edge = lab.start_edge(NGINX_PROXY_READ_TIMEOUT="1s")
    yield edge
    lab.remove(edge.container)


@pytest.mark.parametrize(
    ("method", "expected_hits"),
    [("GET", 2), ("HEAD", 2), ("PUT", 2), ("DELETE", 2), ("OPTIONS", 2), ("POST", 1), ("PATCH", 1)],
)
def test_idempotent_methods_retried_on_the_other_replica_post_and_patch_never(
    lab: Lab, fresh_edge: Edge, method: str, expected_hits: int
) -> None:
    path = f"/fail/{uuid.uuid4().hex}"
    body = None if method == "HEAD" else {"n": 1}
    response = requests.request(method, fresh_edge.base_url + "/api" + path, json=body, timeout=10)
    assert response.status_code == 502
    hits = lab.hits(path)
    assert len(hits) == expected_hits, hits
    assert {m for _, m in hits} == {method}
    if expected_hits == 2:
        assert len({stub for stub, _ in hits}) == 2  # one try on each replica


def test_load_is_spread_over_replicas(lab: Lab, edge: Edge) -> None:
    hosts = Counter(requests.get(f"{edge.base_url}/api/who", timeout=5).json()["host"] for _ in range(20))
    assert len(hosts) == 2, hosts


def test_upstream_blocks_keep_connections_alive(lab: Lab) -> None:
    # With upstream blocks (discovery `resolve` on nginx >= 1.27.3, `reload` in Kubernetes); the
    # registry-free image's `per-request` discovery has none, and gunicorn's sync workers close
    # every connection anyway.
    edge = lab.start_edge(NGINX_UPSTREAM_DISCOVERY="reload")
    path = f"/who/{uuid.uuid4().hex}"
    with requests.Session() as session:  # one client connection, so one nginx worker
        for _ in range(20):
            assert session.get(edge.base_url + "/api" + path, timeout=5).status_code == 200
    received = lab.received(path)
    assert len(received) == 20
    # One connection per replica, reused: not one per request.
    connections = Counter((stub, str(entry["peer"])) for stub, entry in received)
    assert len(connections) <= 2, connections
    lab.remove(edge.container)


def test_access_log_lines_are_batched_and_written_by_a_graceful_stop(lab: Lab) -> None:
    edge = lab.start_edge()
    prefix = f"/api/who/{uuid.uuid4().hex}"
    # Requests 0.3 s apart on one connection (one nginx worker). Written one by one, their lines
    # would reach Docker 0.3 s apart; batched, at most one write a second reaches it.
    started = time.monotonic()
    with requests.Session() as session:
        for i in range(12):
            assert session.get(f"{edge.base_url}{prefix}/{i}", timeout=5).status_code == 200
            time.sleep(0.3)
    elapsed = time.monotonic() - started
    # The last second's lines may still be in nginx's buffer: a graceful stop writes them.
    docker("stop", edge.container)
    stamped = docker("logs", "--timestamps", edge.container).stdout.splitlines()
    times = sorted(
        datetime.fromisoformat(line.split(" ", 1)[0][:26]).timestamp()
        for line in stamped
        if f'"path":"{prefix}/' in line
    )
    assert len(times) == 12, stamped[-20:]  # none lost
    writes = 1 + sum(1 for before, after in itertools.pairwise(times) if after - before > 0.15)
    assert writes <= elapsed + 2, (writes, elapsed, times)


def test_no_upstream_header_reveals_a_version(fresh_edge: Edge) -> None:
    # The stub sends `Server: BaseHTTP/0.6 Python/3...` and `X-Powered-By: Stub/1.2.3` every time.
    for response in (
        requests.get(fresh_edge.base_url + "/api/who", timeout=5),
        requests.head(fresh_edge.base_url + "/api/who", timeout=5),
        requests.get(fresh_edge.base_url + f"/api/fail/{uuid.uuid4().hex}", timeout=10),  # the upstream's own 502
    ):
        assert response.headers["Server"] == "nginx", response.headers
        assert "X-Powered-By" not in response.headers, response.headers
        revealing = [f"{k}: {v}" for k, v in response.headers.items() if re.search(r"[A-Za-z]/\d", v)]
        assert not revealing, revealing


def test_upstream_timeout_is_504_problem(fresh_edge: Edge) -> None:
    _assert_problem(requests.get(fresh_edge.base_url + "/api/slow", timeout=15), 504)


def test_unreachable_upstream_is_502_problem(edge: Edge) -> None:
    # AUTH_UPSTREAM is 127.0.0.1:9 in the lab: nothing listens there.
    _assert_problem(requests.get(edge.base_url + "/auth/anything", timeout=10), 502)


def _sent_until_closed(edge: Edge, partial_request: bytes) -> bytes:
    """Send the start of a request and nothing more: what nginx answers before it closes."""
    host, port = edge.base_url.removeprefix("http://").split(":")
    # nginx gives up after 10 s; a recv still waiting at 30 s raises TimeoutError and fails the test.
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(partial_request)
        try:
            received = sock.recv(4096)
        except ConnectionResetError:
            received = b""
    return received


def test_slow_client_headers_are_cut_off(edge: Edge) -> None:
    path = f"/api/who/{uuid.uuid4().hex}"
    received = _sent_until_closed(edge, f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())  # never the blank line
    assert received == b"" or received.startswith(b"HTTP/1.1 408")
    # nginx closes a timed-out connection without an answer (there is no one to read it) and logs 408.
    assert edge.logged(path)["status"] == 408


def test_slow_client_bodies_are_cut_off(lab: Lab, edge: Edge) -> None:
    path = f"/trickle/{uuid.uuid4().hex}"
    head = f"POST /api{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
    received = _sent_until_closed(edge, head.encode() + b'\r\n{"a":')  # never the other 95 bytes
    assert received == b"" or received.startswith(b"HTTP/1.1 408")
    assert edge.logged("/api" + path)["status"] == 408
    assert lab.hits(path) == []  # nginx reads the whole body first: nothing reached a replica


def test_slow_readers_are_cut_off(edge: Edge) -> None:
    size = 64 * 1024 * 1024  # far more than the socket buffers between nginx and this client hold
    host, port = edge.base_url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((host, int(port)))
        sock.sendall(f"GET /api/big/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(15)  # reads nothing for longer than nginx's 10 s send timeout
        total = 0
        try:
            while chunk := sock.recv(1024 * 1024):
                total += len(chunk)
        except ConnectionResetError:
            pass
    assert 0 < total < size, total  # nginx gave up on this client and closed the connection
    assert int(str(edge.logged(f"/api/big/{size}")["bytes"])) < size


def test_client_addresses_from_untrusted_peers_are_not_believed(lab: Lab, edge: Edge) -> None:
    forged = "203.0.113.5"
    headers = requests.get(
        edge.base_url + "/api/who",
        headers={"X-Forwarded-For": forged, "X-Real-IP": forged, "X-Forwarded-Host": "evil.example"},
        timeout=5,
    ).json()["headers"]
    seen = {k.lower(): v for k, v in headers.items()}
    assert forged not in seen["x-forwarded-for"]
    assert seen["x-forwarded-for"] == seen["x-real-ip"]  # one hop, set by nginx
    assert "," not in seen["x-forwarded-for"]
    assert "x-forwarded-host" not in seen
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-prefix"] == "/api"
    assert len(seen["x-request-id"]) == 32


def test_client_addresses_from_trusted_proxies_are_believed(lab: Lab) -> None:
    trusting = lab.start_edge(NGINX_REAL_IP_FROM="10.0.0.0/8, 172.16.0.0/12,192.168.0.0/16")
    client = "203.0.113.5"
    headers = requests.get(trusting.base_url + "/api/who", headers={"X-Forwarded-For": client}, timeout=5).json()
    seen = {k.lower(): v for k, v in headers["headers"].items()}
    assert seen["x-forwarded-for"] == client
    assert seen["x-real-ip"] == client


def _worker_pids(edge: Edge) -> set[str]:
    rows = docker("top", edge.container, "-o", "pid,args").stdout.splitlines()[1:]
    return {row.split()[0] for row in rows if "worker process" in row}


def _hosts_until(edge: Edge, host: str) -> Counter[str]:
    """GET /api/who until ``host`` answers (at most 20 s): every host that answered."""
    deadline = time.monotonic() + 20
    hosts: Counter[str] = Counter()
    while host not in hosts and time.monotonic() < deadline:
        hosts.update(requests.get(f"{edge.base_url}/api/who", timeout=5).json()["host"] for _ in range(6))
        time.sleep(0.3)
    return hosts


def test_replicas_that_come_and_go_are_followed_without_a_reload(lab: Lab, edge: Edge) -> None:
    # The registry-free image's nginx (no `resolve`) resolves the name per request: nothing is
    # reloaded, so no idle client connection is ever closed under a client.
    workers = _worker_pids(edge)
    newcomer = lab.add_stub()
    newcomer_host = docker("inspect", "-f", "{{.Config.Hostname}}", newcomer).stdout.strip()
    assert newcomer_host in _hosts_until(edge, newcomer_host)
    lab.remove(newcomer)
    # Every request keeps succeeding while the replica disappears (a refused or timed-out connect
    # moves the request to another address) ...
    statuses = Counter(requests.get(f"{edge.base_url}/api/who", timeout=10).status_code for _ in range(30))
    assert statuses == Counter({200: 30}), statuses
    # ... and the same worker processes served it all: no reload, no restart.
    assert _worker_pids(edge) == workers
    assert "reloaded" not in edge.logs()[1]


def test_reload_discovery_reloads_when_a_replica_appears(lab: Lab) -> None:
    edge = lab.start_edge(NGINX_UPSTREAM_DISCOVERY="reload")
    newcomer = lab.add_stub()
    newcomer_host = docker("inspect", "-f", "{{.Config.Hostname}}", newcomer).stdout.strip()
    assert newcomer_host in _hosts_until(edge, newcomer_host)
    edge.wait_for_error_log(f"{container_ip(newcomer)}:8000", after="upstream addresses changed, reloaded")
    lab.remove(newcomer)
    lab.remove(edge.container)


# Inside the nginx container (bash, no curl in the official image): the status line of one GET.
GET_FROM_INSIDE = 'exec 3<>/dev/tcp/127.0.0.1/"$1"; printf "GET %s HTTP/1.0\\r\\n\\r\\n" "$2" >&3; head -n1 <&3'


def _status_from(edge: Edge, client: str) -> tuple[int, str]:
    """GET the edge's /stub_status from the ``client`` container on the lab network."""
    script = (
        "import sys, urllib.error, urllib.request\n"
        "try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
        "except urllib.error.HTTPError as e:\n    r = e\n"
        "print(r.status, r.headers.get('Content-Type'))\nprint(r.read().decode(), end='')\n"
    )
    out = docker("exec", client, "python", "-c", script, f"http://{edge.container}:9000/stub_status").stdout
    head, _, body = out.partition("\n")
    status, content_type = head.split(" ", 1)
    return int(status), content_type + "\n" + body


def test_status_listener_answers_only_the_allowed_addresses(lab: Lab, edge: Edge) -> None:
    neighbour = next(name for name in lab.containers if "-stub-" in name)  # on the same private network
    status, body = _status_from(edge, neighbour)  # the default: private ranges and loopback
    assert status == 200, body
    assert "Active connections:" in body

    closed = lab.start_edge(NGINX_STATUS_ALLOW="127.0.0.1")
    status, body = _status_from(closed, neighbour)
    assert status == 403, body
    content_type, _, problem = body.partition("\n")
    assert content_type == PROBLEM
    assert json.loads(problem)["type"] == "https://wharf.dev/problems/forbidden"
    inside = docker("exec", closed.container, "bash", "-c", GET_FROM_INSIDE, "get", "9000", "/stub_status")
    assert inside.stdout.startswith("HTTP/1.1 200"), inside


def _worker_open_files(container: str) -> list[int]:
    """The soft open-file limit of each nginx worker process in ``container``."""
    script = (
        'for p in /proc/[0-9]*; do if tr "\\0" " " <"$p/cmdline" 2>/dev/null | grep -q "^nginx: worker"; then '
        "awk '/^Max open files/ {print $4}' \"$p/limits\"; fi; done"
    )
    return [int(n) for n in docker("exec", container, "bash", "-c", script).stdout.split()]


def _worker_connections(container: str) -> int:
    conf = docker("exec", container, "cat", "/tmp/nginx/nginx.conf").stdout
    found = re.search(r"^\s*worker_connections (\d+);", conf, re.MULTILINE)
    assert found, conf
    return int(found[1])


def test_workers_raise_their_open_file_limit_above_twice_their_connections(lab: Lab) -> None:
    """A proxied request holds two descriptors: with the common soft limit of 1024, each worker
    raises its own (worker_rlimit_nofile) so that all its connections can be proxied at once."""
    edge = lab.start_edge(run_args=("--ulimit", "nofile=1024:16384"))
    limits = _worker_open_files(edge.container)
    assert limits, "no nginx worker found"
    assert min(limits) >= 2 * _worker_connections(edge.container), limits
    assert "setrlimit" not in edge.logs()[1]


def test_request_rate_over_the_limit_is_429_problem(lab: Lab) -> None:
    limited = lab.start_edge(NGINX_RATE="1r/s", NGINX_BURST="2")
    with requests.Session() as session:
        responses = [session.get(limited.base_url + "/api/who", timeout=5) for _ in range(8)]
    statuses = Counter(r.status_code for r in responses)
    assert statuses[429] >= 4, statuses
    assert statuses[200] >= 1, statuses
    for response in responses:
        if response.status_code == 429:
            _assert_problem(response, 429)
            assert response.headers["Retry-After"] == "1"
            for header, value in SECURITY_HEADERS.items():
                assert response.headers[header] == value
    limited.wait_for_error_log("limiting requests")


def test_strict_rate_on_sign_in_routes_general_rate_elsewhere(lab: Lab) -> None:
    auth_stub = lab.add_stub(alias="auth")
    try:
        limited = lab.start_edge(AUTH_UPSTREAM="auth:8000", NGINX_AUTH_RATE="1r/m", NGINX_AUTH_BURST="2")
        with requests.Session() as session:
            signed_in = [session.post(limited.base_url + "/auth/login", json={}, timeout=5) for _ in range(3)]
            assert [r.status_code for r in signed_in] == [200, 200, 200]  # 1 + burst
            # One strict allowance per client address for the credential and mail routes together,
            # however the path is spelled.
            strict = ("/auth/register", "/auth/refresh", "/auth/login", "/auth//login", "/auth/login/mfa")
            for path in (*strict, "/auth/password-reset", "/auth/verify-email/resend"):
                refused = session.post(limited.base_url + path, json={}, timeout=5)
                _assert_problem(refused, 429)
                assert refused.headers["Retry-After"] == "1"
                assert refused.headers["Cache-Control"] == "no-store"
            # The rest of /auth/ is only under the general, generous rate.
            others = [session.get(limited.base_url + "/auth/me", timeout=5).status_code for _ in range(10)]
            assert others == [200] * 10
            assert session.post(limited.base_url + "/auth/logout", json={}, timeout=5).status_code == 200
        assert len(lab.hits("/login")) == 3
        assert lab.hits("/register") == lab.hits("/refresh") == lab.hits("/password-reset") == []
        assert len(lab.hits("/me")) == 10
    finally:
        lab.remove(auth_stub)


# Every spelling of a service's /internal/ path that nginx normalizes to it (percent-decoding,
# `//`, `/./`, `/../`), sent as it is (an HTTP client library would clean some of them up).
INTERNAL_SPELLINGS = (
    ("GET", "/auth/internal/revocations"),
    ("GET", "/auth/internal/revocations?since=0"),
    ("POST", "/auth/internal/revocations"),
    ("GET", "/auth/internal/"),
    ("GET", "/auth/internal"),
    ("GET", "/auth//internal/revocations"),
    ("GET", "/auth/%69nternal/revocations"),
    ("GET", "/auth/%69%6E%74%65%72%6E%61%6C/revocations"),
    ("GET", "/auth/./internal/revocations"),
    ("GET", "/auth/%2e/internal/revocations"),
    ("GET", "/auth/x/../internal/revocations"),
    ("GET", "/auth/internal%2Frevocations"),
    ("GET", "/auth/%2Finternal/revocations"),
)


def _raw_request(edge: Edge, method: str, target: str, request_id: str) -> tuple[int, str, bytes]:
    """Status, Content-Type and body of one request whose target is sent exactly as given."""
    host, port = edge.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            method, target, body=b"{}" if method == "POST" else None, headers={"X-Request-ID": request_id}
        )
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def test_internal_endpoints_are_never_routed_however_spelled(lab: Lab) -> None:
    """The services' /internal/ endpoints are for the backend network only: nginx answers its own
    404, and nothing reaches the service."""
    auth_stub = lab.add_stub(alias="auth")
    try:
        edge = lab.start_edge(AUTH_UPSTREAM="auth:8000")
        marker = uuid.uuid4().hex
        sent: dict[str, str] = {}
        for i, (method, target) in enumerate(INTERNAL_SPELLINGS):
            request_id = f"internal-{marker}-{i}"
            status, content_type, body = _raw_request(edge, method, target, request_id)
            assert (status, content_type) == (404, PROBLEM), (target, status, body)
            problem = json.loads(body)
            assert problem["type"] == "https://wharf.dev/problems/not-found", target
            assert problem["request_id"] == request_id
            sent[request_id] = target
        # The control: the same stub does get the rest of /auth/.
        control = f"control-{marker}"
        assert _raw_request(edge, "GET", f"/auth/{control}", f"{control}-id")[0] == 200

        deadline = time.monotonic() + 10  # access log lines come in batches
        while True:
            lines = {e.get("request_id"): e for e in _json_lines(edge.logs()[0])}
            if set(sent) <= set(lines) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        for request_id, target in sent.items():
            assert request_id in lines, target
            line = lines[request_id]
            assert (line["status"], line["upstream_addr"]) == (404, ""), (target, line)
            assert str(line["path"]).startswith("/auth/internal"), (target, line)
        received = [str(entry["path"]) for _, entry in lab.received_all()]
        assert f"/{control}" in received
        assert not [path for path in received if "nternal" in path.lower()], received
    finally:
        lab.remove(auth_stub)


def test_body_size_follows_its_setting_headers_and_request_line_stop_at_8k(lab: Lab) -> None:
    small = lab.start_edge(NGINX_CLIENT_MAX_BODY_SIZE="1k")
    assert requests.post(small.base_url + "/api/who", data=b"x" * 1000, timeout=5).status_code == 200
    too_large = _assert_problem(requests.post(small.base_url + "/api/who", data=b"x" * 1100, timeout=5), 413)
    assert "1k" in str(too_large["detail"])
    assert requests.get(small.base_url + "/api/who", headers={"X-Padding": "a" * 7000}, timeout=5).status_code == 200
    _assert_problem(requests.get(small.base_url + "/api/who", headers={"X-Padding": "a" * 8200}, timeout=5), 431)
    assert requests.get(small.base_url + "/api/" + "a" * 7000, timeout=5).status_code == 200
    _assert_problem(requests.get(small.base_url + "/api/" + "a" * 8200, timeout=5), 414)


def test_connections_over_the_per_ip_limit_are_429_problem(lab: Lab) -> None:
    limited = lab.start_edge(NGINX_CONN_PER_IP="1")
    results: list[requests.Response] = []

    def slow() -> None:
        results.append(requests.get(limited.base_url + "/api/slow", timeout=15))

    first = threading.Thread(target=slow)
    first.start()
    time.sleep(1.0)  # the first request is now held by the slow stub
    others = [requests.get(limited.base_url + "/api/who", timeout=5) for _ in range(2)]
    first.join(timeout=20)
    assert [r.status_code for r in results] == [200]
    for response in others:
        _assert_problem(response, 429)
        assert response.headers["Retry-After"]
    limited.wait_for_error_log("limiting connections")


def _tls_files(directory: Path, certificate: str, key: str) -> None:
    """tls.crt and tls.key in ``directory``, readable by nginx's user when mounted."""
    for name, content in (("tls.crt", certificate), ("tls.key", key)):
        (directory / name).write_text(content)
        (directory / name).chmod(0o644)
    directory.chmod(0o755)


def test_maintenance_503_https_redirect_and_hsts(lab: Lab, tmp_path: Path) -> None:
    from wharf_common.devsecrets import self_signed_certificate

    _tls_files(tmp_path, *self_signed_certificate())
    edge = lab.start_edge(
        volumes=(f"{tmp_path}:/run/secrets/nginx:ro",),
        NGINX_TLS="on",
        NGINX_HTTPS_REDIRECT="on",
        NGINX_HTTPS_REDIRECT_PORT="8443",
        NGINX_MAINTENANCE="on",
    )
    assert edge.https_url
    redirected = requests.get(edge.base_url + "/api/who?x=1", allow_redirects=False, timeout=5)
    assert redirected.status_code == 308
    assert redirected.headers["Location"] == "https://127.0.0.1:8443/api/who?x=1"
    assert "Strict-Transport-Security" not in redirected.headers
    assert requests.get(edge.base_url + "/healthz", timeout=5).status_code == 200  # health stays HTTP
    # ACME challenges stay plain HTTP and are served in maintenance (none here: 404 problem+json).
    _assert_problem(requests.get(edge.base_url + "/.well-known/acme-challenge/t0ken", timeout=5), 404)

    down = requests.get(edge.https_url + "/api/who", verify=tmp_path / "tls.crt", timeout=5)
    _assert_problem(down, 503)
    assert int(down.headers["Retry-After"]) >= 1
    assert down.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("NGINX_RATE", "fast", "rendered configuration is invalid"),
        ("NGINX_CLIENT_MAX_BODY_SIZE", "lots", "rendered configuration is invalid"),
        ("NGINX_PROXY_READ_TIMEOUT", "1s; include /etc/passwd", "NGINX_PROXY_READ_TIMEOUT"),
        ("NGINX_TLS", "maybe", "NGINX_TLS"),
        ("NGINX_REAL_IP_FROM", "everyone", "NGINX_REAL_IP_FROM"),
        ("NGINX_BURST", "lots", "rendered configuration is invalid"),
        ("API_UPSTREAM", "api", "API_UPSTREAM"),
    ],
)
def test_a_bad_setting_stops_the_container(setting: str, value: str, message: str) -> None:
    result = docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", "-e", f"{setting}={value}", NGINX_IMAGE, check=False
    )  # fmt: skip
    assert result.returncode == 78, (result.returncode, result.stderr)
    assert message in result.stderr
    assert "configuration error" in result.stderr


@pytest.mark.parametrize(
    ("template", "messages"),
    [
        (
            "server {\n    listen ${NGINX_STATUS_PORT};\n    no_such_directive on;\n}\n",
            ['unknown directive "no_such_directive"', "rendered configuration is invalid"],
        ),
        (
            "server {\n    listen ${NGINX_STATUS_PORT};\n",
            ["unexpected end of file", "rendered configuration is invalid"],
        ),
        ("# ${NGINX_NO_SUCH_SETTING}\n", ["NGINX_NO_SUCH_SETTING is not set (used by conf.d/broken.conf.template)"]),
    ],
)
def test_a_broken_template_stops_the_container(tmp_path: Path, template: str, messages: list[str]) -> None:
    broken = tmp_path / "broken.conf.template"
    broken.write_text(template)
    broken.chmod(0o644)
    target = "/etc/wharf-nginx/templates/conf.d/broken.conf.template"
    result = docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", "-v", f"{broken}:{target}:ro", NGINX_IMAGE, check=False
    )  # fmt: skip
    # `nginx -t` at start-up: the container exits at once with nginx's own diagnosis.
    assert result.returncode == 78, (result.returncode, result.stderr)
    assert "configuration error" in result.stderr
    for message in messages:
        assert message in result.stderr, result.stderr


def test_a_certificate_and_key_that_do_not_belong_together_stop_the_container(tmp_path: Path) -> None:
    """nginx reads the pair on every handshake (no `nginx -t` of it): the entrypoint loads it once."""
    from wharf_common.devsecrets import self_signed_certificate

    certificate, _ = self_signed_certificate()
    _, other_key = self_signed_certificate()
    _tls_files(tmp_path, certificate, other_key)
    result = docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", "-e", "NGINX_TLS=on",
        "-v", f"{tmp_path}:/run/secrets/nginx:ro", NGINX_IMAGE, check=False,
    )  # fmt: skip
    assert result.returncode == 78, (result.returncode, result.stderr)
    assert "key values mismatch" in result.stderr  # nginx's (OpenSSL's) own reason
    pair = "/run/secrets/nginx/tls.crt with /run/secrets/nginx/tls.key"
    assert f"configuration error: nginx cannot use {pair}" in result.stderr
