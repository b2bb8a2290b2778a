"""The bytes of a JSON representation and its strong ETag: one definition for every response
that carries them (fresh, cached and replayed ones must agree)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def json_bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def etag_of(document: bytes) -> str:
    return hashlib.sha256(document).hexdigest()[:32]
