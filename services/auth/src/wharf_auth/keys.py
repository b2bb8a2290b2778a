"""Signing keys: Ed25519 PEM files in ``SIGNING_KEYS_DIR``. All are published in the JWKS; the
newest key published at least ``SIGNING_KEY_ACTIVATION_SECONDS`` ago signs.

Rotation is adding a file named by its UTC creation time (``KEY_NAME_FORMAT``, e.g.
``20270101T000000Z.pem``, as ``make rotate-keys`` does); it is published at once and signs once
the activation delay has passed. Retire an old key by deleting its file once every token it
signed has expired. The directory is re-read when its modification time changes; which key signs
is decided again at every signature, so an activation needs no change on disk.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wharf_common.devsecrets import KEY_NAME_FORMAT
from wharf_common.tokens import ACCESS_TOKEN_TYPE, public_jwk


class SigningKeyError(RuntimeError):
    pass


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    jwk: dict[str, str]
    published: float  # POSIX time: see published_at()


def published_at(path: Path) -> float:
    """When the key was published: the UTC time its name states when it follows ``KEY_NAME_FORMAT``
    (a name survives copies and restores, a modification time does not), else the file's mtime."""
    try:
        return datetime.strptime(path.stem, KEY_NAME_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return path.stat().st_mtime


def load_keys(directory: Path) -> list[SigningKey]:
    """Every ``*.pem`` in ``directory``, oldest first (by publication time, then file name)."""
    try:
        paths = sorted(p for p in directory.glob("*.pem") if p.is_file())
    except OSError as exc:
        raise SigningKeyError(f"SIGNING_KEYS_DIR: cannot read {directory}: {exc.strerror}") from None
    keys = []
    for path in paths:
        try:
            published = published_at(path)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise SigningKeyError(f"SIGNING_KEYS_DIR: {path.name} is not a readable PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"SIGNING_KEYS_DIR: {path.name} is not an Ed25519 key")
        jwk = public_jwk(key.public_key())
        keys.append(SigningKey(jwk["kid"], key, jwk, published))
    if not keys:
        raise SigningKeyError(f"SIGNING_KEYS_DIR: no *.pem key in {directory}")
    return sorted(keys, key=lambda k: k.published)  # stable: file name order among equal times


class KeyRing:
    """The keys of ``directory``: every one published, one signing.

    ``clock`` is the wall clock publication times are compared with (tests move it forward).
    """

    def __init__(self, directory: Path, *, activation_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.activation_seconds = activation_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self._keys = load_keys(directory)

    def _stat(self) -> float | None:
        try:
            return self.directory.stat().st_mtime
        except OSError:
            return None

    def keys(self) -> list[SigningKey]:
        mtime = self._stat()
        if mtime != self._mtime:
            with self._lock:
                try:
                    self._keys = load_keys(self.directory)
                    self._mtime = mtime
                except SigningKeyError:
                    pass  # a half-written rotation: keep signing with the keys we have
        return self._keys

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk for k in self.keys()]}

    def signing_key(self) -> SigningKey:
        """The newest key published at least ``activation_seconds`` ago, else the oldest key.

        Why the delay makes rotation invisible: a verifier refetches the JWKS on an unknown kid at
        most once per its minimum refresh interval R (api: JWKS_MIN_REFRESH_SECONDS). If a key is
        published at P and first used at P + D with D > R, every verifier either fetched the JWKS
        after P (it has the key) or last fetched more than D > R ago (it may refetch on the unknown
        kid, and gets the key): none rejects a token the key signed. Names have a one-second
        resolution and the file appears just after the time its name states, so D may be up to a
        second shorter than the setting: keep ``activation_seconds`` above R + 1.

        With no key old enough, the oldest signs: on a fresh install the only key signs at once, and
        of several new keys the one published first is the most likely to be known already. A key
        that the clock passes while an older one signs takes over without any change on disk.
        """
        keys = self.keys()
        now = self.clock()
        active = [k for k in keys if now - k.published >= self.activation_seconds]
        return active[-1] if active else keys[0]

    def sign_access_token(
        self,
        *,
        issuer: str,
        audience: str,
        subject: str,
        roles: list[str],
        family_id: str | None,
        ttl: int,
        email_verified: bool | None = None,
        amr: list[str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        key = self.signing_key()
        now = time.time()
        issued = int(now)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": subject,
            # Millisecond precision, so a password change revokes tokens issued earlier in the same second.
            # Floored, never rounded up past the moment of issue.
            "iat": math.floor(now * 1000) / 1000,
            "nbf": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
            "roles": list(roles),
        }
        if family_id is not None:
            claims["fid"] = family_id
        if email_verified is not None:
            claims["email_verified"] = email_verified  # the OpenID Connect claim's name and meaning
        if amr is not None:
            claims["amr"] = list(amr)  # how the sign-in was made (RFC 8176 values: pwd, otp)
        token = jwt.encode(
            claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        )
        return token, claims
