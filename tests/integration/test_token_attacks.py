"""Forged, altered and stale access tokens, sent through nginx to api and to auth: every one is a
401 problem+json with a Bearer challenge. A control token made by the same forging code with the
real signing key and honest claims is accepted, so each 401 is the attack's doing.

Also: tokens after logout, refresh-token reuse (revokes the whole family), and password guessing
that spreads itself over spoofed ``X-Forwarded-For`` values (and ``make unlock`` lifting the
lock); no other token passes for a mailed password-reset, verification or sign-in-alert token; a
second-factor challenge is not an access token nor the reverse, and its codes are bound to their
account, a TOTP code to its time step and a recovery code to one use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pyotp
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .conftest import ISSUED_SECRETS, PASSWORD, Stack, register, run_make, wait_for_whole_sign_in_allowance
from .test_recovery_flow import mails_to

pytestmark = [pytest.mark.integration, pytest.mark.resilience]

# One route that checks tokens at each service.
TARGETS = {"api": "/api/users?limit=1", "auth": "/auth/me"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


class Forge:
    """Makes tokens for one real account: its real claims, the stack's real signing key and kid."""

    def __init__(self, stack: Stack, token: str) -> None:
        pem = sorted((stack.secrets_dir / "auth" / "signing-keys").glob("*.pem"))[-1].read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        self.key = key
        self.header = jwt.get_unverified_header(token)
        self.claims = jwt.decode(token, options={"verify_signature": False})
        self.token = token

    def claims_with(self, **changes: Any) -> dict[str, Any]:
        claims = {**self.claims, "jti": uuid.uuid4().hex, **changes}
        return {k: v for k, v in claims.items() if v is not None}

    def signed(
        self, key: Any = None, algorithm: str = "EdDSA", header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        headers = {**self.header, **(header or {})}
        headers.pop("alg", None)
        return jwt.encode(self.claims_with(**claims), key or self.key, algorithm=algorithm, headers=headers)

    def tampered(self, **changes: Any) -> str:
        """The real token with its payload changed and its signature kept."""
        head, _payload, signature = self.token.split(".")
        return ".".join([head, _b64(json.dumps({**self.claims, **changes}).encode()), signature])

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def hmac_signed(self, secret: bytes) -> str:
        """HS256 with a key the verifier could be fooled into using as an HMAC secret."""
        signing_input = _unsigned({**self.header, "alg": "HS256"}, self.claims_with())
        return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def _now() -> int:
    return int(time.time())


def _other_jwk(private: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}


def _self_signed(forge: Forge, parameter: str) -> str:
    """Signed with an attacker's key that the header itself offers (``jwk``)."""
    key = ed25519.Ed25519PrivateKey.generate()
    return forge.signed(key, header={parameter: _other_jwk(key)})


ATTACKS: dict[str, Callable[[Forge], str]] = {
    "alg none": lambda f: _unsigned({**f.header, "alg": "none"}, f.claims_with()) + ".",
    "alg None, signature kept": lambda f: _unsigned({**f.header, "alg": "None"}, f.claims) + "." + f.token[-86:],
    "HS256 keyed with the public key PEM": lambda f: f.hmac_signed(f.public_pem()),
    "HS256 keyed with the raw public key": lambda f: f.hmac_signed(
        f.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ),
    "RS256 with an attacker's key": lambda f: f.signed(rsa.generate_private_key(65537, 2048), "RS256"),
    "ES256 with an attacker's key": lambda f: f.signed(ec.generate_private_key(ec.SECP256R1()), "ES256"),
    "EdDSA with an attacker's key, real kid": lambda f: f.signed(ed25519.Ed25519PrivateKey.generate()),
    "attacker's key embedded as jwk": lambda f: _self_signed(f, "jwk"),
    "jku pointing elsewhere": lambda f: f.signed(
        ed25519.Ed25519PrivateKey.generate(), header={"jku": "http://attacker.example/jwks.json", "kid": "attacker"}
    ),
    "expired": lambda f: f.signed(iat=_now() - 7200, nbf=_now() - 7200, exp=_now() - 3600),
    "nbf in the future": lambda f: f.signed(nbf=_now() + 3600, exp=_now() + 7200),
    "no exp": lambda f: f.signed(exp=None),
    "wrong iss": lambda f: f.signed(iss="https://attacker.example"),
    "wrong aud": lambda f: f.signed(aud="someone-else"),
    "unknown kid": lambda f: f.signed(header={"kid": "no-such-key"}),
    "kid with path traversal": lambda f: f.signed(header={"kid": "../../../../../../etc/passwd"}),
    "kid with SQL": lambda f: f.signed(header={"kid": "' OR '1'='1' --"}),
    "kid with a NUL": lambda f: f.signed(header={"kid": f.header["kid"] + "\x00"}),
    "wrong typ": lambda f: f.signed(header={"typ": "JWT"}),
    "tampered payload (admin role)": lambda f: f.tampered(roles=["admin"]),
    "tampered payload (other subject)": lambda f: f.tampered(sub=str(uuid.uuid4())),
    "tampered payload (later exp)": lambda f: f.tampered(exp=f.claims["exp"] + 86400),
    "truncated signature": lambda f: f.token[:-6],
    "signature stripped": lambda f: f.token.rsplit(".", 1)[0] + ".",
    "two segments": lambda f: f.token.rsplit(".", 1)[0],
    "not base64": lambda f: "!!!." + f.token.split(".", 1)[1],
    # RFC 7515: the same bytes spelled another way are not the token (issue 22).
    "padding appended to the signature": lambda f: f.token + "==",
    "padding after the header": lambda f: f.token.replace(".", "==.", 1),
    # "~~~" encodes to "fn5-" whatever its alignment in six of them: a "-" to respell as "+".
    "standard base64 alphabet": lambda f: f.signed(jti="~" * 6).translate(str.maketrans("-_", "+/")),
}


@pytest.fixture(scope="module")
def forge(stack: Stack) -> Forge:
    with requests.Session() as http:
        email = register(stack, http)
        tokens = http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
        assert tokens.status_code == 200, tokens.text
    return Forge(stack, tokens.json()["access_token"])


def _call(stack: Stack, target: str, token: str) -> requests.Response:
    return requests.get(stack.base_url + TARGETS[target], headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _assert_rejected(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("target", TARGETS)
def test_the_forging_code_makes_tokens_the_services_accept(stack: Stack, forge: Forge, target: str) -> None:
    assert _call(stack, target, forge.token).status_code == 200
    assert _call(stack, target, forge.signed()).status_code == 200


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("attack", ATTACKS)
def test_forged_or_altered_token_is_401(stack: Stack, forge: Forge, attack: str, target: str) -> None:
    _assert_rejected(_call(stack, target, ATTACKS[attack](forge)))


def _sign_in(stack: Stack, http: requests.Session, email: str) -> dict[str, str]:
    tokens = http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert tokens.status_code == 200, tokens.text
    return tokens.json()


def _rejected_everywhere(stack: Stack, token: str) -> bool:
    """Both services refuse ``token`` (the api learns of a revocation within moments: polled, bounded)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        statuses = {target: _call(stack, target, token).status_code for target in TARGETS for _ in range(4)}
        if set(statuses.values()) == {401}:
            return True
        time.sleep(0.25)
    return False


def test_token_after_logout_is_401(stack: Stack, http: requests.Session) -> None:
    access = _sign_in(stack, http, register(stack, http))["access_token"]
    assert _call(stack, "api", access).status_code == 200
    logout = http.post(f"{stack.base_url}/auth/logout", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert logout.status_code == 204
    assert _rejected_everywhere(stack, access)
    _assert_rejected(_call(stack, "api", access))
    _assert_rejected(_call(stack, "auth", access))


def test_refresh_token_reuse_is_401_and_revokes_the_family(stack: Stack, http: requests.Session) -> None:
    """Within the reuse interval a retry gets the same pair (test_contract.py); after it, reuse ends the session."""
    from wharf_auth.settings import AuthSettings

    interval = AuthSettings.model_fields["refresh_reuse_interval_seconds"].default
    email = register(stack, http)
    first = _sign_in(stack, http, email)
    unrelated = _sign_in(stack, http, email)  # another session of the same account
    rotated = http.post(f"{stack.base_url}/auth/refresh", json={"refresh_token": first["refresh_token"]}, timeout=10)
    assert rotated.status_code == 200
    second = rotated.json()
    assert _call(stack, "api", second["access_token"]).status_code == 200

    time.sleep(interval + 1)
    reused = http.post(f"{stack.base_url}/auth/refresh", json={"refresh_token": first["refresh_token"]}, timeout=10)
    _assert_rejected(reused)
    # The whole family is dead: both access tokens and the newest refresh token.
    assert _rejected_everywhere(stack, second["access_token"])
    assert _rejected_everywhere(stack, first["access_token"])
    newest = http.post(f"{stack.base_url}/auth/refresh", json={"refresh_token": second["refresh_token"]}, timeout=10)
    _assert_rejected(newest)
    # Another session of the same account lives on.
    assert _call(stack, "api", unrelated["access_token"]).status_code == 200


def test_password_guessing_is_429_even_spread_over_spoofed_forwarded_for(stack: Stack) -> None:
    with requests.Session() as http:
        email = register(stack, http)
        responses = []
        for attempt in range(7):
            spoofed = {"X-Forwarded-For": f"203.0.113.{attempt + 1}", "X-Real-IP": f"198.51.100.{attempt + 1}"}
            password = f"guess number {attempt}" if attempt < 6 else PASSWORD  # the right one comes too late
            responses.append(
                http.post(
                    f"{stack.base_url}/auth/login",
                    json={"email": email, "password": password},
                    headers=spoofed,
                    timeout=10,
                )
            )
    statuses = [r.status_code for r in responses]
    # 5 failures (the configured LOGIN_MAX_FAILURES), then the account is locked whatever address
    # the guesser claims: auth's own 429 (not nginx's rate limit), with Retry-After.
    assert statuses == [401] * 5 + [429] * 2, statuses
    for locked in responses[5:]:
        assert locked.headers["Content-Type"] == "application/problem+json"
        assert "sign-in attempts" in locked.json()["detail"]
        assert int(locked.headers["Retry-After"]) > 0
    # The owner is mailed once for the lock; an operator lifts it (saying "was not locked" when
    # there was none: services/auth/tests).
    assert len(mails_to(stack, email, "locked")) == 1
    lifted = run_make(stack, "unlock", f"EMAIL={email}")
    assert f"{email}: unlocked (5 failed sign-ins forgotten)" in lifted.stdout
    with requests.Session() as http:
        signed_in = http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert signed_in.status_code == 200
    ISSUED_SECRETS.add(signed_in.json()["refresh_token"])


@pytest.mark.parametrize("path", ["/auth/password-reset/confirm", "/auth/verify-email", "/auth/sign-in-alert"])
def test_no_other_token_passes_for_a_mailed_one(stack: Stack, http: requests.Session, path: str) -> None:
    """Access tokens, refresh tokens and forgeries are not password-reset, verification or
    sign-in-alert tokens (those are random, mailed, and known to auth only as a hash): each is a
    400 problem."""
    tokens = _sign_in(stack, http, register(stack, http))
    candidates = [tokens["access_token"], tokens["refresh_token"], _unsigned({"alg": "none"}, {"sub": "x"})]
    candidates += [hashlib.sha256(tokens["refresh_token"].encode()).hexdigest(), "A" * 43]
    for candidate in candidates:
        body = {"token": candidate, "new_password": "a completely different passphrase"}
        if not path.endswith("/confirm"):
            del body["new_password"]
        response = http.post(f"{stack.base_url}{path}", json=body, timeout=10)
        assert response.status_code == 400, (candidate[:20], response.text)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json()["type"].endswith("/token-invalid")
    # A token in the URL is never read: the body is what counts (an empty body is 400/415, never a 2xx).
    in_url = http.post(f"{stack.base_url}{path}?token={tokens['refresh_token']}", timeout=10)
    assert in_url.status_code in {400, 415}


# -- the second factor ----------------------------------------------------------------------------


def _with_second_factor(stack: Stack, http: requests.Session) -> tuple[str, pyotp.TOTP, list[str]]:
    """A new account with a confirmed TOTP factor: its email, the authenticator and the recovery codes."""
    email = register(stack, http)
    access = {"Authorization": f"Bearer {_sign_in(stack, http, email)['access_token']}"}
    secret = http.post(f"{stack.base_url}/auth/mfa/totp", headers=access, timeout=10).json()["secret"]
    totp = pyotp.TOTP(secret)
    ISSUED_SECRETS.add(secret)
    # A code of the step before: the test's own codes (this step and later) are then never replays.
    confirm = {"code": totp.at(time.time() - 30)}
    codes = http.post(f"{stack.base_url}/auth/mfa/totp/confirm", json=confirm, headers=access, timeout=10).json()
    ISSUED_SECRETS.update(codes["recovery_codes"])
    return email, totp, codes["recovery_codes"]


def _challenge(stack: Stack, http: requests.Session, email: str) -> str:
    answer = http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert answer.json()["mfa_required"] is True, answer.text
    ISSUED_SECRETS.add(answer.json()["mfa_token"])
    return answer.json()["mfa_token"]


def _second_step(stack: Stack, http: requests.Session, mfa_token: str, **code: str) -> requests.Response:
    return http.post(f"{stack.base_url}/auth/login/mfa", json={"mfa_token": mfa_token, **code}, timeout=10)


def test_a_second_factor_challenge_is_no_access_token_and_its_codes_are_bound(
    stack: Stack, http: requests.Session
) -> None:
    # 18 requests to the edge's strict sign-in routes follow (logins, second steps): more than what
    # the tests before may have left of its per-address burst, so it is whole first.
    wait_for_whole_sign_in_allowance()
    ada, ada_totp, ada_codes = _with_second_factor(stack, http)
    bob, bob_totp, _bob_codes = _with_second_factor(stack, http)
    challenge = _challenge(stack, http, ada)
    # A challenge is not an access token, at either service.
    _assert_rejected(_call(stack, "api", challenge))
    _assert_rejected(_call(stack, "auth", challenge))
    # Codes of another account fail: bob's TOTP code, ada's recovery code at bob's challenge.
    _assert_rejected(_second_step(stack, http, challenge, code=bob_totp.now()))
    _assert_rejected(_second_step(stack, http, _challenge(stack, http, bob), recovery_code=ada_codes[0]))
    # A recovery code works once.
    done = _second_step(stack, http, challenge, recovery_code=ada_codes[0])
    assert done.status_code == 200, done.text
    tokens = done.json()
    ISSUED_SECRETS.add(tokens["refresh_token"])
    _assert_rejected(_second_step(stack, http, _challenge(stack, http, ada), recovery_code=ada_codes[0]))
    # A used challenge, or an access token offered as one, is refused.
    _assert_rejected(_second_step(stack, http, challenge, code=ada_totp.now()))
    _assert_rejected(_second_step(stack, http, tokens["access_token"], code=ada_totp.now()))
    # A TOTP code is accepted once per time step: the same code again is a replay.
    code = ada_totp.now()
    accepted = _second_step(stack, http, _challenge(stack, http, ada), code=code)
    assert accepted.status_code == 200, accepted.text
    _assert_rejected(_second_step(stack, http, _challenge(stack, http, ada), code=code))
