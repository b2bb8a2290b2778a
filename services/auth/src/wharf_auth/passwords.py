"""Password policy (NIST SP 800-63B-4) and Argon2id hashing.

Policy: 15 to 256 characters, any Unicode including spaces, no composition rules, never
truncated; refused when common/breached (bundled list, case-insensitive), repetitive or
sequential, or built from context words (the email, its local part, the product name).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 15
MAX_LENGTH = 256
PRODUCT_WORDS = ("wharf",)

_KEYBOARD_ROWS = (
    "`1234567890-=",
    "qwertyuiop[]\\",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik,9ol.0p;/",
)
_SEQUENCES = ("abcdefghijklmnopqrstuvwxyz", "0123456789", *_KEYBOARD_ROWS)


@lru_cache(maxsize=1)
def blocklist() -> frozenset[str]:
    text = resources.files("wharf_auth").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def _fold(value: str) -> str:
    return unicodedata.normalize("NFKC", value).casefold()


def _is_repetitive(password: str) -> bool:
    """The whole password is one short unit repeated, e.g. ``aaaa…`` or ``abcabcabc…``."""
    n = len(password)
    for size in range(1, min(4, n // 2) + 1):
        unit = password[:size]
        if (unit * (n // size + 1))[:n] == password:
            return True
    return len(set(password)) <= 2


def _is_sequential(password: str) -> bool:
    """Mostly runs along the alphabet, the digits or a keyboard row (either direction, wrapping)."""
    runs = [s + s for s in _SEQUENCES] + [(s + s)[::-1] for s in _SEQUENCES]
    covered, i, n = 0, 0, len(password)
    while i < n:
        size = 3
        while i + size < n + 1 and any(password[i : i + size + 1] in run for run in runs):
            size += 1
        if size >= 4:  # a run of at least 4 consecutive sequence characters
            covered += size
            i += size
        else:
            i += 1
    return n - covered < MIN_LENGTH // 3


def _context_words(email: str | None) -> list[str]:
    words = list(PRODUCT_WORDS)
    if email:
        folded = _fold(email)
        local, _, domain = folded.partition("@")
        words += [folded, local, domain.split(".")[0]]
    return [w for w in words if len(w) >= 4]


def _is_contextual(password: str, email: str | None) -> bool:
    """Built from context words: once they (and digits/punctuation/sequences) are removed, little is left."""
    remaining = password
    found = False
    for word in sorted(_context_words(email), key=len, reverse=True):
        if word in remaining:
            found = True
            remaining = remaining.replace(word, "")
    if not found:
        return False
    letters = [c for c in remaining if c.isalpha()]
    return len(letters) < 6 or remaining in blocklist() or _is_repetitive(remaining) or _is_sequential(remaining)


def problems(password: str, *, email: str | None = None) -> list[str]:
    """Why ``password`` is refused (empty when acceptable). Reasons are safe to show the user."""
    length = len(password)
    if length < MIN_LENGTH:
        return [f"must be at least {MIN_LENGTH} characters long"]
    if length > MAX_LENGTH:
        return [f"must be at most {MAX_LENGTH} characters long"]
    folded = _fold(password)
    squeezed = folded.replace(" ", "")
    if folded in blocklist() or squeezed in blocklist() or folded.strip() in blocklist():
        return ["is too common: it appears in a list of breached passwords"]
    if _is_repetitive(squeezed):
        return ["is too repetitive (e.g. 'aaaa…', 'abab…')"]
    if _is_sequential(squeezed):
        return ["is a predictable sequence (alphabet, digits or keyboard row)"]
    if _is_contextual(squeezed, email):
        return ["is built from your email address or the product name"]
    return []


def make_hasher(memory_kib: int, time_cost: int) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
    )


class Passwords:
    """Hash, verify and upgrade Argon2id hashes with the configured parameters."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self.hasher = hasher
        # Verified against when the account does not exist, so both paths cost the same.
        self._dummy = hasher.hash("wharf dummy password for timing equalisation")

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; an unknown account (``None``) costs one verification too."""
        try:
            return self.hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
