"""Hostile input through nginx: property-based fuzzing of both OpenAPI documents (schemathesis),
then hand-written cases a fuzzer rarely finds. Nothing may be a 5xx, nothing may contradict the
documents, and every refusal is a 4xx problem+json. The fuzzing also holds the documents' promise
about requests (tests/integration/contract.py): what a document allows is accepted, or refused for
the reason declared for it, and what it does not allow is refused; through an edge whose
per-address limits no generated request shares, so every operation's own logic answers.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis

from . import contract
from .conftest import (
    CONFORMANCE_CHECKS,
    ISSUED_SECRETS,
    PASSWORD,
    Stack,
    UnthrottledEdge,
)

pytestmark = [pytest.mark.integration, pytest.mark.resilience]

PROBLEM = "application/problem+json"
EXAMPLES_PER_OPERATION = 20
# Ends the session it is called with: each of its valid cases gets a session of its own. (POST
# /password ends every session only with the right current password, which no generated case has.)
ENDS_THE_SESSION = {"/logout"}


# -- fuzzing ------------------------------------------------------------------------------------


@dataclass
class Fuzzing:
    """Generated cases of one document, sent through the unthrottled edge, each from an address of
    its own, with the fuzzing account's token (or a session of its own, for an operation that ends
    it); half of the valid cases that name a user name one that exists. Notes every answer."""

    edge: UnthrottledEdge
    service: str
    email: str  # the account's
    bearer: dict[str, str]  # a session of it
    answers: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _kept: str | None = None

    def __post_init__(self) -> None:
        self.checks = [*CONFORMANCE_CHECKS, contract.refused_for_a_declared_reason(self.service)]

    def existing_user(self, method: str) -> str:
        """A user of the account: a new one to delete, else the same one each time."""
        if method != "DELETE" and self._kept is not None:
            return self._kept
        created = requests.post(
            f"{self.edge.base_url}/api/users",
            json={"name": "Fuzzed", "email": f"fuzzed-{uuid.uuid4().hex[:12]}@example.com"},
            headers={**self.bearer, **self.edge.new_client()},
            timeout=15,
        )
        assert created.status_code == 201, created.text
        user_id = str(created.json()["id"])
        if method != "DELETE":
            self._kept = user_id
        return user_id

    def send(self, case: Any, mode: Any) -> None:
        label = f"{case.operation.label} [{mode.value}]"
        ends = mode.is_positive and case.operation.path in ENDS_THE_SESSION
        session = _sign_in(self.edge, self.email) if ends else self.bearer
        if mode.is_positive and "user_id" in (case.path_parameters or {}) and next(self._turn) % 2:
            case.path_parameters["user_id"] = self.existing_user(case.method.upper())
        headers = {**session, **self.edge.new_client()}
        try:
            response = case.call(base_url=f"{self.edge.base_url}/{self.service}", headers=headers, timeout=15)
            self.answers[label][response.status_code] += 1
            case.validate_response(response, checks=self.checks, headers=headers)
        except (Exception, BaseExceptionGroup) as failure:  # every check failure, collected and reported
            self.failures.append(f"{label}: {str(failure).strip()[:1500]}")

    def fuzz(self, operation: Any, mode: Any) -> None:
        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,  # the same cases every run: a failure here is reproducible
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            self.send(case, mode)

        # Unsatisfiable: no request of this mode exists (nothing to make invalid in an operation without inputs).
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            run()


def _sign_in(edge: UnthrottledEdge, email: str) -> dict[str, str]:
    """Authorization headers of a new session of ``email``'s account."""
    credentials = {"email": email, "password": PASSWORD}
    login = requests.post(f"{edge.base_url}/auth/login", json=credentials, headers=edge.new_client(), timeout=15)
    assert login.status_code == 200, login.text
    ISSUED_SECRETS.add(login.json()["refresh_token"])
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.fixture(scope="module")
def account(unthrottled: UnthrottledEdge) -> str:
    """The email of this module's account."""
    email = f"hostile-{uuid.uuid4().hex[:12]}@example.com"
    fields = {"email": email, "password": PASSWORD, "name": "Hostile"}
    registered = requests.post(
        f"{unthrottled.base_url}/auth/register", json=fields, headers=unthrottled.new_client(), timeout=15
    )
    assert registered.status_code == 201, registered.text
    return email


@pytest.fixture(scope="module")
def bearer(unthrottled: UnthrottledEdge, account: str) -> dict[str, str]:
    return _sign_in(unthrottled, account)


@pytest.mark.parametrize("service", ["api", "auth"])
def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_contradiction(
    stack: Stack, unthrottled: UnthrottledEdge, account: str, bearer: dict[str, str], service: str
) -> None:
    """Valid and invalid requests generated from each document: no 5xx, no answer the document
    does not declare, a valid request accepted (or refused for its declared reason) and an invalid
    one refused; and every operation reached, through an edge whose limits spare each request."""
    url = f"{stack.base_url}/{service}/openapi.json"
    schema = schemathesis.openapi.from_url(url, config=contract.config(service), timeout=10)
    fuzzing = Fuzzing(unthrottled, service, account, bearer)
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzzing.fuzz(operation, mode)
    assert len(operations) >= 4
    answered = {label: dict(statuses) for label, statuses in fuzzing.answers.items()}
    unreached = [o.label for o in operations if not any(s != 429 for s in fuzzing.answers[f"{o.label} [positive]"])]
    assert unreached == [], f"never past a rate limit: {unreached}\n{answered}"
    assert fuzzing.failures == [], "\n\n".join(fuzzing.failures)


# -- hand-written cases -------------------------------------------------------------------------


def _assert_problem(response: requests.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"] == PROBLEM, response.headers
    body = response.json()
    assert body["status"] == response.status_code
    assert {"type", "title", "detail"} <= set(body)
    return body


Send = Callable[[str, dict[str, str]], requests.Response]  # (the edge's URL, headers) -> the answer


def _post(path: str, data: bytes | str, content_type: str = "application/json") -> Send:
    def send(edge: str, headers: dict[str, str]) -> requests.Response:
        return requests.post(edge + path, data=data, headers={**headers, "Content-Type": content_type}, timeout=30)

    return send


def _get(path: str, **extra_headers: str) -> Send:
    def send(edge: str, headers: dict[str, str]) -> requests.Response:
        return requests.get(edge + path, headers={**headers, **extra_headers}, timeout=15)

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
        lambda edge, headers: requests.post(
            edge + "/api/users",
            json={"name": "E", "email": f"{uuid.uuid4().hex}@example.com"},
            headers={**headers, "Idempotency-Key": "k" * 300},
            timeout=15,
        ),
        (422,),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_request_is_a_4xx_problem(unthrottled: UnthrottledEdge, bearer: dict[str, str], case: str) -> None:
    """Each from an address of its own: the strict limit on sign-in routes answers none of them."""
    send, statuses = CASES[case]
    response = send(unthrottled.base_url, {**bearer, **unthrottled.new_client()})
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
