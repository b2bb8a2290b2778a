"""Signing keys: Ed25519 PEM files in ``SIGNING_KEYS_DIR``; the newest file name signs, all are published.

Rotation is adding a file (e.g. ``20270101T000000Z.pem``); retire an old key by deleting its file
once every token it signed has expired. The directory is re-read when its modification time changes.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wharf_common.tokens import ACCESS_TOKEN_TYPE, public_jwk


class SigningKeyError(RuntimeError):
    pass


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    jwk: dict[str, str]


def load_keys(directory: Path) -> list[SigningKey]:
    """Every ``*.pem`` in ``directory`` sorted by file name, oldest first."""
    try:
        paths = sorted(p for p in directory.glob("*.pem") if p.is_file())
    except OSError as exc:
        raise SigningKeyError(f"SIGNING_KEYS_DIR: cannot read {directory}: {exc.strerror}") from None
    keys = []
    for path in paths:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise SigningKeyError(f"SIGNING_KEYS_DIR: {path.name} is not a readable PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"SIGNING_KEYS_DIR: {path.name} is not an Ed25519 key")
        jwk = public_jwk(key.public_key())
        keys.append(SigningKey(jwk["kid"], key, jwk))
    if not keys:
        raise SigningKeyError(f"SIGNING_KEYS_DIR: no *.pem key in {directory}")
    return keys


class KeyRing:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
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

    def sign_access_token(
        self, *, issuer: str, audience: str, subject: str, roles: list[str], family_id: str | None, ttl: int
    ) -> tuple[str, dict[str, Any]]:
        key = self.keys()[-1]
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
        token = jwt.encode(
            claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        )
        return token, claims
