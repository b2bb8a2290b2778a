"""Verification of Wharf access tokens (EdDSA JWTs), shared by every service.

Only ``EdDSA`` is accepted whatever the header says; the key is chosen by ``kid`` from a JWKS the
verifier trusts (``jku``, ``x5u``, ``jwk`` and ``x5c`` header parameters are never consulted), and
every failure is raised as :class:`InvalidToken`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ALGORITHMS = ["EdDSA"]
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"]
MAX_TOKEN_LENGTH = 8192
# The most clock leeway any verifier may allow; revocations are kept at least this long past expiry.
MAX_LEEWAY_SECONDS = 300

JwksDocument = Mapping[str, Any]


class InvalidToken(Exception):
    """The token is malformed, forged, expired, not yet valid, or not meant for us."""


class KeysUnavailable(InvalidToken):
    """No signing key could be loaded yet (the issuer is unreachable): a fault on our side, not the client's."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# Three base64url segments (RFC 7515 section 2: no padding, no other characters).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def is_canonical_jws(token: str) -> bool:
    """True when ``token`` is a compact JWS whose every segment is canonical base64url: only the
    URL-safe alphabet, no ``=`` padding, and the unused low bits of the last character zero (so
    that exactly one spelling decodes to the same bytes). PyJWT's decoder is lenient on all three."""
    if not _COMPACT_JWS.fullmatch(token):
        return False
    for segment in token.split("."):
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):  # a length of 4n+1 characters decodes to nothing
            return False
        if b64url(raw) != segment:
            return False
    return True


def okp_thumbprint(x: str, crv: str = "Ed25519") -> str:
    """RFC 7638 JWK thumbprint of an OKP public key: SHA-256 over the required members, sorted."""
    canonical = json.dumps({"crv": crv, "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = b64url(raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": okp_thumbprint(x), "use": "sig", "alg": "EdDSA"}


def _key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey | None:
    """An Ed25519 verification key, or ``None`` for anything else (other types, private keys, enc keys)."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" in jwk:
        return None
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", "EdDSA") != "EdDSA":
        return None
    try:
        raw = base64.urlsafe_b64decode(str(jwk["x"]) + "==")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (KeyError, ValueError):
        return None


def fetch_json(url: str, timeout: float = 2.0) -> Callable[[], Any]:
    """A source of the JSON document at ``url`` (http or https only): a JWKS, say."""
    if not url.startswith(("https://", "http://")):
        raise ValueError("the URL must be http(s)")

    def fetch() -> Any:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read(1024 * 1024))

    return fetch


class JwksCache:
    """Keys by ``kid`` from a JWKS source, refetched after ``ttl`` and on an unknown kid at most
    once per ``min_refresh_interval`` seconds (so garbage kids cannot hammer the issuer)."""

    def __init__(
        self,
        source: Callable[[], JwksDocument],
        *,
        ttl: float = 300.0,
        min_refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        self._fetched_at = self._clock()
        try:
            document = self._source()
        except (OSError, ValueError) as exc:  # a failed fetch keeps the previous keys
            if not self._keys:
                raise KeysUnavailable("signing keys are unavailable") from exc
            return
        keys = {}
        for jwk in document.get("keys", []) if isinstance(document, Mapping) else []:
            if isinstance(jwk, Mapping) and isinstance(jwk.get("kid"), str):
                key = _key_from_jwk(jwk)
                if key is not None:
                    keys[jwk["kid"]] = key
        self._keys = keys

    def get(self, kid: str) -> Ed25519PublicKey:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._ttl
            may_refresh = self._fetched_at is None or now - self._fetched_at >= self._min_refresh_interval
            if stale or (kid not in self._keys and may_refresh):
                self._refresh()
            if not self._keys:  # never fetched successfully: our fault, not the token's
                raise KeysUnavailable("signing keys are unavailable")
            key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("unknown signing key")
        return key


class Verified(NamedTuple):
    claims: dict[str, Any]
    kid: str
    key: Ed25519PublicKey
    expires: int  # the exp claim, read as PyJWT reads it


class VerifiedTokens:
    """Tokens this process has fully verified, by their exact string, so a client that sends the same
    token again is not charged a signature check and a JSON parse every time.

    Only what cannot change is remembered (signature, header, issuer, audience, claim types); the
    expiry is checked on every use, the signing key must still be the one the JWKS publishes, and
    revocation stays the caller's check, made on every request. Bounded: when full, expired entries
    go first, then the oldest. Kept under CONTRIBUTING.md's rule: bench/README.md, history,
    "Verified-token cache".
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._entries: dict[str, Verified] = {}
        self._lock = threading.Lock()  # for writers; a lookup is one atomic dict read

    def get(self, token: str) -> Verified | None:
        return self._entries.get(token)

    def put(self, token: str, verified: Verified, now: float) -> None:
        with self._lock:
            if len(self._entries) >= self._max_entries:
                for stale in [t for t, v in self._entries.items() if v.expires <= now]:
                    del self._entries[stale]
                while len(self._entries) >= self._max_entries:
                    del self._entries[next(iter(self._entries))]
            self._entries[token] = verified

    def discard(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)

    def __len__(self) -> int:
        return len(self._entries)


class TokenVerifier:
    """Verify an access token and return its claims, or raise :class:`InvalidToken`."""

    def __init__(
        self,
        keys: JwksCache | Callable[[], JwksDocument],
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        token_type: str = ACCESS_TOKEN_TYPE,
        verified: VerifiedTokens | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys if isinstance(keys, JwksCache) else JwksCache(keys)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.token_type = token_type
        self.verified = verified if verified is not None else VerifiedTokens()
        self._clock = clock

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token (a copy: callers may not change what later requests see)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("malformed token")
        known = self.verified.get(token)
        if known is not None and self._still_valid(token, known):
            return dict(known.claims)
        verified = self._verify_fully(token)
        self.verified.put(token, verified, self._clock())
        return dict(verified.claims)

    def _still_valid(self, token: str, known: Verified) -> bool:
        """A token verified before: raises once it has expired (the same leeway as a full check); False
        when the JWKS was re-fetched since, so the token is verified again against what it says now."""
        if self._clock() >= known.expires + self.leeway:
            self.verified.discard(token)
            raise InvalidToken("Signature has expired")
        try:
            current = self.keys.get(known.kid)
        except InvalidToken:  # its key was retired (or none can be loaded: KeysUnavailable)
            self.verified.discard(token)
            raise
        if current is not known.key:
            self.verified.discard(token)
            return False
        return True

    def _verify_fully(self, token: str) -> Verified:
        if not is_canonical_jws(token):
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        # The header's alg is never trusted: decode() below only accepts ALGORITHMS; this check
        # just gives a clearer reason.
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("unsupported algorithm")
        if str(header.get("typ", "")).lower() not in {self.token_type, f"application/{self.token_type}"}:
            raise InvalidToken("wrong token type")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("missing key id")
        key = self.keys.get(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True, "strict_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
            raise InvalidToken("malformed claims")
        return Verified(claims, kid, key, int(claims["exp"]))
