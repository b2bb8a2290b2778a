"""The OpenAPI documents are the contract (issue 22).

A Python client is generated at test time from each live document (openapi-python-client, as a
client developer would) and completes the whole journey through nginx with no hand-written HTTP:
register, sign in, refresh (and retry the refresh), CRUD with ETags and an Idempotency-Key, sign
out; and the account's own security: a TOTP second factor, sessions, events. Every response the
generated clients see, successes and errors alike, is checked against the document they were
generated from with schemathesis' conformance checks: a declared status, the declared media type,
the declared headers with their types, and a body the schema accepts.
The clients go through the stack's second edge (``unthrottled``), from an address of their own, so
no allowance other tests spent holds them up. What the documents promise about requests (valid
ones accepted, invalid ones refused) is fuzzed in test_hostile_input.py (see contract.py).
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urljoin

import httpx
import pyotp
import pytest
import schemathesis

from . import contract
from .conftest import CONFORMANCE_CHECKS, ISSUED_SECRETS, PASSWORD, UnthrottledEdge

pytestmark = pytest.mark.integration

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
SERVICES = ("auth", "api")


@dataclass
class Conformance:
    """Checks each response a generated client receives against its service's live document."""

    schemas: dict[str, Any]  # service -> schemathesis schema
    seen: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def hook(self, service: str) -> Any:
        schema, prefix = self.schemas[service], f"/{service}"

        def check(response: httpx.Response) -> None:
            response.read()  # event hooks see the response before its body is read
            method, path = response.request.method, response.request.url.path.removeprefix(prefix)
            label = f"{method} {prefix}{path} -> {response.status_code}"
            if method == "OPTIONS":  # answered for every path, documented for none (no body to check)
                return
            self.seen.append(label)
            operation = schema.find_operation_by_path(method, path)
            if operation is None and response.status_code == 405:  # declared on every operation of the path
                found = (schema.find_operation_by_path(other, path) for other in ("GET", "POST", "PATCH", "DELETE"))
                operation = next((op for op in found if op is not None), None)
            if operation is None:
                self.failures.append(f"{label}: no such operation in the document")
                return
            template = re.escape(operation.path).replace(r"\{", "{").replace(r"\}", "}")
            pattern = re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", template)
            match = re.fullmatch(pattern, path)
            case = operation.Case(path_parameters=match.groupdict() if match else {})
            try:
                case.validate_response(response, checks=CONFORMANCE_CHECKS)
            except (Exception, BaseExceptionGroup) as failure:  # every contradiction, collected
                self.failures.append(f"{label}: {str(failure).strip()[:1500]}")

        return check


@dataclass
class Generated:
    packages: dict[str, str]  # service -> the generated package's name
    base_urls: dict[str, str]  # service -> where its document's first server entry points
    conformance: Conformance
    client_address: dict[str, str]  # this journey's own address at the edge (X-Forwarded-For)
    opened: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for client in self.opened:
            client.get_httpx_client().close()
        self.opened.clear()

    def module(self, service: str, name: str) -> ModuleType:
        return importlib.import_module(f"{self.packages[service]}.{name}")

    def client(self, service: str, token: str | None = None) -> Any:
        client_module = self.module(service, "client")
        hooks = {"event_hooks": {"response": [self.conformance.hook(service)]}}
        # A copy of the headers each: an authenticated client adds its token to the dict it is given.
        headers = dict(self.client_address)
        options = {"base_url": self.base_urls[service], "headers": headers, "timeout": httpx.Timeout(15)}
        if token is None:
            client = client_module.Client(**options, httpx_args=hooks)
        else:
            client = client_module.AuthenticatedClient(**options, token=token, httpx_args=hooks)
        self.opened.append(client)
        return client

    def call(self, service: str, operation: str, **kwargs: Any) -> Any:
        """``operation`` (``tokens.post_login``, say) of the generated client, its detailed answer."""
        return self.module(service, f"api.{operation}").sync_detailed(**kwargs)


@pytest.fixture(scope="module")
def generated(unthrottled: UnthrottledEdge, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    # Through the edge that believes the client's address: the journey signs in and refreshes from
    # an address of its own, whose strict per-address allowance no other test has spent.
    out = tmp_path_factory.mktemp("generated-clients")
    config = out / "openapi-python-client.yaml"
    config.write_text("post_hooks: []\n")  # no formatting of the generated code: nobody reads it here
    packages, base_urls, schemas = {}, {}, {}
    for service in SERVICES:
        url = f"{unthrottled.base_url}/{service}/openapi.json"
        package = f"wharf_{service}_contract_client"
        generate = [str(GENERATOR), "generate", "--url", url, "--meta", "none", "--fail-on-warning"]
        generate += ["--output-path", str(out / package), "--config", str(config)]
        result = subprocess.run(generate, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"the {service} document does not make a clean client:\n{result.stdout}"
        schema = schemathesis.openapi.from_url(url, config=contract.config(service), timeout=10)
        schemas[service] = schema
        packages[service] = package
        # From the document alone: its first server entry, resolved against the document's URL.
        base_urls[service] = urljoin(url, schema.raw_schema["servers"][0]["url"])
    sys.path.insert(0, str(out))
    clients = Generated(packages, base_urls, Conformance(schemas), unthrottled.new_client())
    try:
        yield clients
    finally:
        clients.close()
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.startswith(tuple(packages.values()))]:
            del sys.modules[name]


def test_generated_clients_complete_the_journey_and_every_response_matches_the_document(
    generated: Generated,
) -> None:
    generated.conformance.failures.clear()
    auth_models = generated.module("auth", "models")
    api_models = generated.module("api", "models")
    anonymous = generated.client("auth")
    email = f"contract-{uuid.uuid4().hex[:12]}@example.com"

    # Register and sign in (a wrong password first: an error the document must describe too).
    registered = generated.call(
        "auth",
        "accounts.post_register",
        client=anonymous,
        body=auth_models.RegisterBody(email=email, password=PASSWORD, name="Contract"),
    )
    assert registered.status_code == 201
    assert registered.parsed.email == email
    wrong = generated.call(
        "auth", "tokens.post_login", client=anonymous, body=auth_models.LoginBody(email=email, password="not it")
    )
    assert wrong.status_code == 401
    assert wrong.parsed.status == 401
    signed_in = generated.call(
        "auth", "tokens.post_login", client=anonymous, body=auth_models.LoginBody(email=email, password=PASSWORD)
    )
    assert signed_in.status_code == 200
    tokens = signed_in.parsed
    ISSUED_SECRETS.add(tokens.refresh_token)

    # Refresh, then retry the refresh as a client that lost the answer would: the same pair.
    refresh_body = auth_models.RefreshBody(refresh_token=tokens.refresh_token)
    rotated = generated.call("auth", "tokens.post_refresh", client=anonymous, body=refresh_body).parsed
    retried = generated.call("auth", "tokens.post_refresh", client=anonymous, body=refresh_body).parsed
    assert (retried.access_token, retried.refresh_token) == (rotated.access_token, rotated.refresh_token)
    ISSUED_SECRETS.add(rotated.refresh_token)
    me = generated.call("auth", "accounts.get_me", client=generated.client("auth", rotated.access_token))
    assert me.status_code == 200
    assert me.parsed.email == email

    # The users resource, with the refreshed access token.
    api = generated.client("api", rotated.access_token)
    assert generated.call("api", "users.get_users", client=generated.client("api")).status_code == 401
    user_email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    create = api_models.UserCreate(name="Grace", email=user_email)
    key = uuid.uuid4().hex
    created = generated.call("api", "users.post_users", client=api, body=create, idempotency_key=key)
    assert created.status_code == 201
    replayed = generated.call("api", "users.post_users", client=api, body=create, idempotency_key=key)
    assert replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.parsed.id == created.parsed.id
    user_id = created.parsed.id
    taken = generated.call("api", "users.post_users", client=api, body=create)
    assert taken.status_code == 409

    read = generated.call("api", "users.get_users_user_id", client=api, user_id=user_id)
    assert read.status_code == 200
    etag = read.headers["ETag"]
    unchanged = generated.call("api", "users.get_users_user_id", client=api, user_id=user_id, if_none_match=etag)
    assert unchanged.status_code == 304
    patched, stale = (
        generated.call(
            "api",
            "users.patch_users_user_id",
            client=api,
            user_id=user_id,
            body=api_models.UserPatch(name=name),
            if_match=etag,
        )
        for name in ("Grace Hopper", "A lost update")
    )
    assert patched.status_code == 200
    assert patched.parsed.name == "Grace Hopper"
    assert stale.status_code == 412  # the same ETag again: the first patch changed the user
    page = generated.call("api", "users.get_users", client=api, limit=100)
    assert page.status_code == 200
    assert generated.call("api", "users.get_users", client=api, limit=0).status_code == 422
    assert generated.call("api", "users.get_users_user_id", client=api, user_id=uuid.uuid4()).status_code == 404
    deleted = generated.call(
        "api", "users.delete_users_user_id", client=api, user_id=user_id, if_match=patched.headers["ETag"]
    )
    assert deleted.status_code == 204
    assert "content-type" not in deleted.headers  # no body, so no media type (not text/html)
    assert generated.call("api", "users.get_users_user_id", client=api, user_id=user_id).status_code == 404

    # Sign out: the session's tokens are refused afterwards.
    signed_out = generated.call("auth", "tokens.post_logout", client=generated.client("auth", rotated.access_token))
    assert signed_out.status_code == 204
    assert "content-type" not in signed_out.headers
    gone = generated.call("auth", "accounts.get_me", client=generated.client("auth", rotated.access_token))
    assert gone.status_code == 401

    conformance = generated.conformance
    assert len(conformance.seen) >= 20, conformance.seen
    assert conformance.failures == [], "\n\n".join(conformance.failures)


def test_generated_clients_control_sessions_the_second_factor_and_events(generated: Generated) -> None:
    """Issue 30's operations through the generated auth client: enrol and confirm a TOTP factor,
    sign in with it (the challenge, then a code, then a recovery code), list and end sessions,
    page through the account's events, remove the factor; a bad sign-in-alert token's 400."""
    generated.conformance.failures.clear()
    models = generated.module("auth", "models")
    anonymous = generated.client("auth")
    email = f"contract-mfa-{uuid.uuid4().hex[:12]}@example.com"
    body = models.RegisterBody(email=email, password=PASSWORD, name="Contract")
    assert generated.call("auth", "accounts.post_register", client=anonymous, body=body).status_code == 201
    credentials = models.LoginBody(email=email, password=PASSWORD)

    def sign_in() -> Any:
        answer = generated.call("auth", "tokens.post_login", client=anonymous, body=credentials)
        assert answer.status_code == 200
        return answer.parsed

    first = sign_in()
    assert isinstance(first, models.TokenPair)
    ISSUED_SECRETS.add(first.refresh_token)
    signed_in = generated.client("auth", first.access_token)
    enrolment = generated.call("auth", "mfa.post_mfa_totp", client=signed_in).parsed
    ISSUED_SECRETS.add(enrolment.secret)
    totp = pyotp.TOTP(enrolment.secret)
    assert enrolment.otpauth_uri.startswith("otpauth://totp/")
    wrong = generated.call(
        "auth", "mfa.post_mfa_totp_confirm", client=signed_in, body=models.TotpConfirmBody(code="000000")
    )
    assert wrong.status_code in {403, 200}  # 200 only if 000000 happens to be the code (1 in a million)
    confirm = models.TotpConfirmBody(code=totp.at(time.time() - 30))  # this step's codes stay unused
    codes = generated.call("auth", "mfa.post_mfa_totp_confirm", client=signed_in, body=confirm).parsed
    ISSUED_SECRETS.update(codes.recovery_codes)
    assert len(codes.recovery_codes) == 10

    challenge = sign_in()
    assert isinstance(challenge, models.LoginChallenge)
    ISSUED_SECRETS.add(challenge.mfa_token)
    with_code = models.MfaLoginWithCode(mfa_token=challenge.mfa_token, code=totp.now())
    second = generated.call("auth", "tokens.post_login_mfa", client=anonymous, body=with_code)
    assert second.status_code == 200
    ISSUED_SECRETS.add(second.parsed.refresh_token)
    with_recovery = models.MfaLoginWithRecoveryCode(
        mfa_token=sign_in().mfa_token, recovery_code=codes.recovery_codes[0]
    )
    third = generated.call("auth", "tokens.post_login_mfa", client=anonymous, body=with_recovery)
    assert third.status_code == 200
    ISSUED_SECRETS.add(third.parsed.refresh_token)
    replayed = generated.call("auth", "tokens.post_login_mfa", client=anonymous, body=with_code)
    assert replayed.status_code == 401

    current = generated.client("auth", second.parsed.access_token)
    listed = generated.call("auth", "sessions.get_sessions", client=current).parsed
    assert len(listed.items) == 3
    (this,) = [s for s in listed.items if s.current]
    others = [s for s in listed.items if not s.current]
    ended = generated.call("auth", "sessions.delete_sessions_session_id", client=current, session_id=others[0].id)
    assert ended.status_code == 204
    gone = generated.call("auth", "sessions.delete_sessions_session_id", client=current, session_id=others[0].id)
    assert gone.status_code == 404
    assert generated.call("auth", "sessions.delete_sessions", client=current).status_code == 204
    (left,) = generated.call("auth", "sessions.get_sessions", client=current).parsed.items
    assert left.id == this.id

    page = generated.call("auth", "sessions.get_events", client=current, limit=3).parsed
    assert len(page.items) == 3
    rest = generated.call("auth", "sessions.get_events", client=current, limit=100, cursor=page.next_cursor).parsed
    assert rest.next_cursor is None
    types = [event.type_ for event in [*page.items, *rest.items]]  # `type` is a Python builtin
    assert {"sign_in", "mfa_enabled", "second_factor_failed", "recovery_code_used", "session_ended"} <= set(types)
    assert generated.call("auth", "sessions.get_events", client=current, cursor="not-a-cursor").status_code == 422

    remove = models.TotpRemoveWithCode(password=PASSWORD, code=totp.at(time.time() + 30))
    assert generated.call("auth", "mfa.delete_mfa_totp", client=current, body=remove).status_code == 204
    assert isinstance(sign_in(), models.TokenPair)
    refused = generated.call(
        "auth", "recovery.post_sign_in_alert", client=anonymous, body=models.SignInAlertBody(token="A" * 43)
    )
    assert refused.status_code == 400

    conformance = generated.conformance
    assert len(conformance.seen) >= 20, conformance.seen
    assert conformance.failures == [], "\n\n".join(conformance.failures)


def test_the_edges_own_answers_match_the_document(generated: Generated) -> None:
    """What nginx answers before a service sees the request is declared too: a header that may
    appear once sent twice (400), a method the path does not serve (405), a request line or
    headers too large (414, 431); and a malformed id is the 404 the document declares. Sent with
    the generated client's own httpx client, so the same conformance checks apply."""
    generated.conformance.failures.clear()
    http = generated.client("api").get_httpx_client()
    twice = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    answers = {
        400: http.send(httpx.Request("GET", f"{generated.base_urls['api']}/users", headers=twice)),
        404: http.get("/users/not-a-uuid"),
        405: http.put("/users"),
        414: http.get("/users", params={"cursor": "x" * 9000}),
        431: http.get("/users", headers={"X-Filler": "f" * 10_000}),
    }
    assert {status: response.status_code for status, response in answers.items()} == {s: s for s in answers}
    options = http.options("/users")
    assert (options.status_code, options.content) == (200, b"")
    assert "content-type" not in options.headers
    assert generated.conformance.failures == [], "\n\n".join(generated.conformance.failures)
