"""Hostile input through nginx: property-based fuzzing of both OpenAPI documents (schemathesis),
then hand-written cases a fuzzer rarely finds. Nothing may be a 5xx, nothing may contradict the
documents, and every refusal is a 4xx problem+json.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis

from .conftest import CONFORMANCE_CHECKS, Stack, sign_in, wait_for_whole_sign_in_allowance

pytestmark = [pytest.mark.integration, pytest.mark.resilience]

PROBLEM = "application/problem+json"
EXAMPLES_PER_OPERATION = 20
# Each failed sign-in counts against this address (auth locks it out after IP_MAX_FAILURES, 50 by
# default, and every later test signs in from here too): few examples for /login.
FEWER_EXAMPLES = {"/login": 6}
# Each accepted request for a mail counts against this address too (RECOVERY_IP_MAX_REQUESTS, 20 an
# hour, shared with test_recovery_flow.py).
FEWER_EXAMPLES |= {"/password-reset": 4, "/verify-email/resend": 4}
# A wrong second-factor code counts as a failed sign-in, for the account and this address alike.
FEWER_EXAMPLES |= {"/mfa/totp/confirm": 4, "/login/mfa": 6}


@pytest.fixture(scope="module", autouse=True)
def _sign_in_limit_left_as_found() -> Iterator[None]:
    """This module spends the edge's strict sign-in allowance (shared by every test from this
    address); afterwards it waits until the allowance is whole again."""
    yield
    wait_for_whole_sign_in_allowance()


@pytest.fixture(scope="module")
def bearer(stack: Stack) -> dict[str, str]:
    with requests.Session() as http:
        return sign_in(stack, http)


def _within_edge_limits(send: Callable[[], Any]) -> Any:
    """``send()``, sent again after ``Retry-After`` while the edge's rate limit answers 429 (the
    strict one on sign-in routes is soon spent by a fuzzer); auth's own 429s (sign-in lockout,
    requests for a mail) are kept."""
    response = send()
    for _ in range(10):
        if response.status_code != 429 or "sign-in" in response.text or "for a mail" in response.text:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
        response = send()
    return response


# -- fuzzing ------------------------------------------------------------------------------------


def _fuzz(operation: Any, base_url: str, headers: dict[str, str], mode: Any, examples: int) -> list[str]:
    """Run ``examples`` generated cases of ``mode``; the failures, as readable lines."""
    failures: list[str] = []

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same cases every run: a failure here is reproducible
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        try:
            response = _within_edge_limits(lambda: case.call(base_url=base_url, headers=headers, timeout=15))
            # Invalid requests (negative mode) are held to the same checks. Not `negative_data_rejection`: it
            # takes an unknown query parameter for an invalid request, and the services ignore those.
            case.validate_response(response, checks=CONFORMANCE_CHECKS, headers=headers)
        except (Exception, BaseExceptionGroup) as failure:  # every check failure, collected and reported
            failures.append(f"{operation.label} [{mode.value}]: {str(failure).strip()[:1500]}")

    # Unsatisfiable: no request of this mode exists (nothing to make invalid in an operation without inputs).
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()
    return failures


@pytest.mark.parametrize("service", ["api", "auth"])
def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_contradiction(
    stack: Stack, bearer: dict[str, str], service: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/{service}/openapi.json", timeout=10)
    base_url = f"{stack.base_url}/{service}"
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        if operation.path in {"/logout", "/password"}:  # would end the fuzzing session itself
            continue
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            examples = FEWER_EXAMPLES.get(operation.path, EXAMPLES_PER_OPERATION)
            failures += _fuzz(operation, base_url, bearer, mode, examples)
    assert operations >= 4
    assert failures == [], "\n\n".join(failures)


# -- hand-written cases -------------------------------------------------------------------------


def _assert_problem(response: requests.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"] == PROBLEM, response.headers
    body = response.json()
    assert body["status"] == response.status_code
    assert {"type", "title", "detail"} <= set(body)
    return body


Send = Callable[[Stack, dict[str, str]], requests.Response]


def _post(path: str, data: bytes | str, content_type: str = "application/json") -> Send:
    def send(stack: Stack, headers: dict[str, str]) -> requests.Response:
        return _within_edge_limits(
            lambda: requests.post(
                stack.base_url + path, data=data, headers={**headers, "Content-Type": content_type}, timeout=30
            )
        )

    return send


def _get(path: str, **extra_headers: str) -> Send:
    def send(stack: Stack, headers: dict[str, str]) -> requests.Response:
        return requests.get(stack.base_url + path, headers={**headers, **extra_headers}, timeout=15)

    return send


def _user(name: Any = "Eve", email: Any = "eve@example.com") -> str:
    return json.dumps({"name": name, "email": email})


NESTED = "[" * 50_000 + "]" * 50_000
SQL = "' OR '1'='1'; DROP TABLE api.users; --"

CASES: dict[str, tuple[Send, tuple[int, ...]]] = {
    "malformed JSON": (_post("/api/users", '{"name": "Eve", "email": '), (400,)),
    "JSON with trailing garbage": (_post("/api/users", _user() + "}}"), (400,)),
    "a JSON array, not an object": (_post("/api/users", "[1, 2, 3]"), (400,)),
    "wrong content type": (_post("/api/users", _user(), "text/plain"), (415,)),
    "form-encoded body": (
        _post("/auth/login", "email=a%40b.c&password=x", "application/x-www-form-urlencoded"),
        (415,),
    ),
    "10 MiB body": (_post("/api/users", b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'), (413,)),
    "deeply nested arrays": (_post("/api/users", NESTED), (400, 422)),
    "deeply nested objects": (_post("/auth/login", '{"a":' * 20_000 + "1" + "}" * 20_000), (400, 422)),
    "invalid UTF-8": (_post("/api/users", b'{"name": "\xff\xfe\xfd", "email": "eve@example.com"}'), (400,)),
    "lone surrogate escape": (_post("/api/users", '{"name": "\\ud800", "email": "eve@example.com"}'), (400, 422)),
    "NUL byte in a name": (_post("/api/users", _user(name="Eve\u0000")), (422,)),
    "NUL byte in an email": (
        _post("/auth/register", '{"email": "e\\u0000@example.com", "password": "x", "name": "E"}'),
        (422,),
    ),
    "NUL byte in a login email": (_post("/auth/login", '{"email": "\\u0000", "password": "x"}'), (401, 422)),
    "very long name": (_post("/api/users", _user(name="n" * 100_000)), (422,)),
    "very long email": (_post("/api/users", _user(email="e" * 50_000 + "@example.com")), (422,)),
    "very long password": (
        _post("/auth/register", json.dumps({"email": "l@example.com", "password": "p" * 100_000, "name": "L"})),
        (422,),
    ),
    "name of the wrong type": (_post("/api/users", _user(name=12345)), (422,)),
    "huge integer as a name": (
        _post("/api/users", '{"name": ' + "9" * 5000 + ', "email": "e@example.com"}'),
        (400, 422),
    ),
    "unknown field": (_post("/api/users", json.dumps({"name": "E", "email": "e@example.com", "admin": True})), (422,)),
    "SQL in an email": (_post("/api/users", _user(email=SQL)), (422,)),
    "SQL in a login": (_post("/auth/login", json.dumps({"email": SQL, "password": SQL})), (401, 422)),
    "SQL in an id": (_get("/api/users/1%27%20OR%20%271%27=%271"), (404,)),
    "SQL in a cursor": (_get("/api/users?cursor=%27%20OR%201=1--"), (422,)),
    "SQL in a limit": (_get("/api/users?limit=1;DROP%20TABLE%20users"), (422,)),
    "path traversal in an id": (_get("/api/users/..%2f..%2f..%2fetc%2fpasswd"), (400, 404)),
    "dot segments in an id": (_get("/api/users/%2e%2e"), (400, 404)),
    "encoded NUL in an id": (_get("/api/users/%00"), (400, 404)),
    "negative limit": (_get("/api/users?limit=-1"), (422,)),
    "zero limit": (_get("/api/users?limit=0"), (422,)),
    "huge limit": (_get("/api/users?limit=99999999999999999999999999999"), (422,)),
    "float limit": (_get("/api/users?limit=1e3"), (422,)),
    "non-ASCII digits as a limit": (_get("/api/users?limit=%D9%A1%D9%A0"), (422,)),
    "very long cursor": (_get("/api/users?cursor=" + "A" * 4000), (422,)),
    "very long header": (_get("/api/users", **{"X-Filler": "f" * 10_000}), (431,)),
    "oversized bearer token": (_get("/api/users", Authorization="Bearer " + "a" * 10_000), (431,)),
    "long bearer token": (_get("/api/users", Authorization="Bearer " + "a" * 7000), (401,)),
    "SQL in a reset token": (
        _post("/auth/password-reset/confirm", json.dumps({"token": SQL, "new_password": SQL * 3})),
        (400,),
    ),
    "NUL byte in a reset email": (_post("/auth/password-reset", '{"email": "a\\u0000@example.com"}'), (422,)),
    "very long verification token": (_post("/auth/verify-email", json.dumps({"token": "t" * 100_000})), (422,)),
    "verification token of the wrong type": (_post("/auth/verify-email", '{"token": {"$ne": null}}'), (422,)),
    "form-encoded reset request": (
        _post("/auth/password-reset", "email=a%40b.c", "application/x-www-form-urlencoded"),
        (415,),
    ),
    "CRLF in a query (header injection)": (_get("/api/users?cursor=%0d%0aSet-Cookie:%20pwned=1"), (422,)),
    "Idempotency-Key too long": (
        lambda stack, headers: requests.post(
            stack.base_url + "/api/users",
            json={"name": "E", "email": f"{uuid.uuid4().hex}@example.com"},
            headers={**headers, "Idempotency-Key": "k" * 300},
            timeout=15,
        ),
        (422,),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_request_is_a_4xx_problem(stack: Stack, bearer: dict[str, str], case: str) -> None:
    send, statuses = CASES[case]
    response = send(stack, bearer)
    _assert_problem(response, *statuses)
    assert "pwned" not in str(response.headers)


def _raw(stack: Stack, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP library would; the status, headers and body nginx answers with."""
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET /api/users HTTP/1.1\r\nHost: x\r\nX-A: a\rSet-Cookie: pwned=1\r\nConnection: close\r\n\r\n",
            id="bare CR in a header",
        ),
        pytest.param(
            b"GET /api/users HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n", id="NUL in a header"
        ),
        pytest.param(b"GET /api/users/\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", id="NUL in the path"),
        pytest.param(
            b"GET /api/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            id="dot segments above the root",
        ),
        pytest.param(
            b"GET /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n",
            id="negative Content-Length",
        ),
        pytest.param(
            b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n0\r\n\r\n",
            id="Content-Length with chunked (smuggling)",
        ),
    ],
)
def test_malformed_http_is_a_4xx_problem(stack: Stack, request_bytes: bytes) -> None:
    status, headers, body = _raw(stack, request_bytes)
    assert 400 <= status < 500, (status, body[:300])
    assert headers["content-type"] == PROBLEM
    assert json.loads(body)["status"] == status
    assert "set-cookie" not in headers
