"""The Authenticator: a token the verifier has cached is still checked against revocations every time."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wharf_common.authn import Authenticator
from wharf_common.problems import Problem
from wharf_common.revocation import Revocation, RevocationSet
from wharf_common.tokens import TokenVerifier, public_jwk

ISS, AUD = "wharf-auth", "wharf"


def _token(key: Ed25519PrivateKey, jti: str) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISS, "aud": AUD, "sub": "acct-1", "iat": now, "nbf": now, "exp": now + 900, "jti": jti, "fid": "fam-1"
    }  # fmt: skip
    kid = public_jwk(key.public_key())["kid"]
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"})


@pytest.mark.parametrize(("kind", "value"), [("jti", "j1"), ("family", "fam-1")])
def test_a_cached_token_is_rejected_once_revoked(kind: str, value: str) -> None:
    key = Ed25519PrivateKey.generate()
    verifier = TokenVerifier(lambda: {"keys": [public_jwk(key.public_key())]}, issuer=ISS, audience=AUD)
    revocations = RevocationSet(list, None)
    revocations._ensure_started()  # initial sync now (from an empty list)
    authenticator = Authenticator(verifier, revocations)
    token = _token(key, "j1")
    assert authenticator.verify(token)["sub"] == "acct-1"
    assert authenticator.verify(token)["sub"] == "acct-1"
    assert len(verifier.verified) == 1

    revocations.add(Revocation(kind, value, time.time() + 900))
    with pytest.raises(Problem) as rejected:
        authenticator.verify(token)
    assert rejected.value.status == 401
    other = _token(key, "j2")  # another token of the same login session
    if kind == "jti":
        assert authenticator.verify(other)["jti"] == "j2"
    else:
        with pytest.raises(Problem):
            authenticator.verify(other)
    revocations.stop()
