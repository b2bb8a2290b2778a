"""The public keys that verify access tokens."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from wharf_auth import extensions
from wharf_auth.schemas import JwkSet
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation

bp = Blueprint("keys", __name__)


@bp.get("/.well-known/jwks.json")
@operation(
    "Public keys that verify access tokens (JWKS)",
    responses={200: Doc("The key set", JwkSet, headers=("Cache-Control",))},
    tags=("tokens",),
)
def jwks() -> ResponseReturnValue:
    return jsonify(extensions.of().keyring.jwks()), 200, {"Cache-Control": "public, max-age=300"}
