"""The second factor: TOTP (RFC 6238, with pyotp), its secret encrypted at rest, and recovery codes.

A TOTP secret is 160 random bits, shown once at enrolment (as text, as an ``otpauth://`` URI and as
a QR code) and stored encrypted (:class:`SecretBox`). A code is accepted for the current time step
and the one before and after it (clock drift), and only for a step later than the last one
accepted, so a code seen once cannot be replayed. Recovery codes are 80 random bits each, shown
once, stored only as their SHA-256, and work once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
from datetime import datetime

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ISSUER = "Wharf"
DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1  # a code of the step before or after the current one is accepted too
RECOVERY_CODE_COUNT = 10
_KEY_INFO = b"wharf mfa secret encryption v1"


class UnreadableSecret(Exception):
    """A stored secret that none of the configured keys opens (the key file lost a line)."""


class SecretBox:
    """Encrypts second-factor secrets (Fernet: AES-CBC with HMAC-SHA256) under keys derived with
    HKDF from the lines of MFA_ENCRYPTION_KEY: the first line's key encrypts, every line's decrypts,
    and :meth:`reseal` moves a secret to the first key (rotation)."""

    def __init__(self, key_material: str) -> None:
        lines = [line.strip() for line in key_material.splitlines() if line.strip()]
        self._fernet = MultiFernet([Fernet(self._derive(line)) for line in lines])

    @staticmethod
    def _derive(line: str) -> bytes:
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(line.encode("utf-8"))
        return base64.urlsafe_b64encode(raw)

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode("ascii"))

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode("ascii")
        except InvalidToken:
            raise UnreadableSecret("no configured MFA_ENCRYPTION_KEY line opens this secret") from None

    def reseal(self, sealed: bytes) -> bytes:
        """The same secret under the first key (unchanged if it is already)."""
        try:
            return self._fernet.rotate(sealed)
        except InvalidToken:
            raise UnreadableSecret("no configured MFA_ENCRYPTION_KEY line opens this secret") from None


def new_secret() -> str:
    return pyotp.random_base32()


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)


def provisioning_uri(secret: str, account_name: str) -> str:
    """The ``otpauth://totp/...`` URI authenticator apps read (from the QR code or by hand)."""
    return _totp(secret).provisioning_uri(name=account_name, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The URI as a QR code: a standalone SVG document."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", xmldecl=False, scale=4, title="TOTP enrolment")
    return out.getvalue().decode("utf-8")


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code ``code`` is (the current one, or one step either side), or None.
    Every candidate is compared in constant time."""
    totp = _totp(secret)
    current = totp.timecode(now)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def new_recovery_codes() -> list[str]:
    """Ten codes of 16 base32 characters (80 random bits), grouped by four for reading."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
        codes.append("-".join(raw[i : i + 4] for i in range(0, len(raw), 4)))
    return codes


def recovery_code_hash(code: str) -> str:
    """SHA-256 of the code as typed, ignoring case, spaces and dashes."""
    normalised = "".join(code.split()).replace("-", "").lower()
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()
