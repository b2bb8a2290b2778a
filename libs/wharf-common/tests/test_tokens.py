from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wharf_common.tokens import InvalidToken, JwksCache, TokenVerifier, VerifiedTokens, okp_thumbprint, public_jwk

ISS, AUD = "wharf-auth", "wharf"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def jwks(key: Ed25519PrivateKey) -> dict[str, Any]:
    return {"keys": [public_jwk(key.public_key())]}


@pytest.fixture
def verifier(jwks: dict[str, Any]) -> TokenVerifier:
    return TokenVerifier(lambda: jwks, issuer=ISS, audience=AUD, leeway=5)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "sub": "acct-1", "iat": now, "nbf": now, "exp": now + 900, "jti": "j1", "roles": []}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Ed25519PrivateKey, payload: dict[str, Any], **headers: Any) -> str:
    kid = public_jwk(key.public_key())["kid"]
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt", **headers})


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    assert verifier.verify(sign(key, claims()))["sub"] == "acct-1"


def test_thumbprint_matches_rfc7638_example() -> None:
    # RFC 8037 appendix A.3: thumbprint of the Ed25519 example key
    assert (
        okp_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo") == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )


def test_alg_none_rejected(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    kid = public_jwk(key.public_key())["kid"]
    token = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{b64(claims())}."
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_hs256_with_public_key_rejected(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    import hashlib
    import hmac

    kid = public_jwk(key.public_key())["kid"]
    for secret in (
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    ):
        signing_input = f"{b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}.{b64(claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        with pytest.raises(InvalidToken):
            verifier.verify(token)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(claims(exp=int(time.time()) - 60), id="expired"),
        pytest.param(claims(nbf=int(time.time()) + 600), id="nbf-future"),
        pytest.param(claims(iss="evil"), id="wrong-iss"),
        pytest.param(claims(aud="other"), id="wrong-aud"),
        pytest.param(claims(exp=None), id="missing-exp"),
        pytest.param(claims(jti=None), id="missing-jti"),
        pytest.param(claims(sub=None), id="missing-sub"),
    ],
)
def test_bad_claims_rejected(verifier: TokenVerifier, key: Ed25519PrivateKey, payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(sign(key, payload))


def test_wrong_typ_rejected(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(sign(key, claims(), typ="JWT"))


def test_unknown_kid_rejected(verifier: TokenVerifier) -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(InvalidToken):
        verifier.verify(sign(other, claims()))


def test_tampered_payload_and_signature_rejected(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    header, payload, signature = sign(key, claims()).split(".")
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{b64(claims(roles=['admin']))}.{signature}")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{payload}.{flipped}")
    for garbage in ("", "a.b", "a.b.c", "x" * 9000):
        with pytest.raises(InvalidToken):
            verifier.verify(garbage)


def self_signed_der(key: Ed25519PrivateKey) -> bytes:
    """A real certificate for ``key``, as an attacker would put in ``x5c``."""
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wharf-auth")])
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    builder = builder.serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
    return builder.sign(key, None).public_bytes(serialization.Encoding.DER)


def test_jwk_jku_x5u_x5c_header_parameters_are_ignored(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    attacker = Ed25519PrivateKey.generate()
    attacker_jwk = public_jwk(attacker.public_key())
    trusted_kid = public_jwk(key.public_key())["kid"]
    # signed by the attacker, pointing at the attacker's key in the header but claiming our kid
    attacker_x5c = {"x5c": [base64.b64encode(self_signed_der(attacker)).decode()]}
    for extra in (
        {"jwk": attacker_jwk},
        {"jku": "https://evil.example/jwks.json"},
        {"x5u": "https://evil.example/c"},
        attacker_x5c,
    ):
        token = jwt.encode(
            claims(), attacker, algorithm="EdDSA", headers={"kid": trusted_kid, "typ": "at+jwt", **extra}
        )
        with pytest.raises(InvalidToken):
            verifier.verify(token)
    # with the attacker's own kid: unknown, not fetched from the header
    token = jwt.encode(
        claims(),
        attacker,
        algorithm="EdDSA",
        headers={"kid": attacker_jwk["kid"], "typ": "at+jwt", "jwk": attacker_jwk},
    )
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_unknown_kid_refreshes_at_most_once_per_interval(key: Ed25519PrivateKey) -> None:
    now = [1000.0]
    fetches: list[int] = []
    published: list[dict[str, Any]] = []

    def source() -> dict[str, Any]:
        fetches.append(1)
        return {"keys": list(published)}

    cache = JwksCache(source, ttl=300, min_refresh_interval=30, clock=lambda: now[0])
    verifier = TokenVerifier(cache, issuer=ISS, audience=AUD)
    with pytest.raises(InvalidToken):
        verifier.verify(sign(key, claims()))  # initial fetch: empty
    for _ in range(5):
        with pytest.raises(InvalidToken):
            verifier.verify(sign(key, claims()))
    assert len(fetches) == 1
    published.append(public_jwk(key.public_key()))  # rotation at the issuer
    now[0] += 31
    assert verifier.verify(sign(key, claims()))["sub"] == "acct-1"
    assert len(fetches) == 2


def test_source_failure_keeps_previous_keys(key: Ed25519PrivateKey, jwks: dict[str, Any]) -> None:
    now = [0.0]
    calls = [0]

    def source() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError("issuer down")
        return jwks

    verifier = TokenVerifier(JwksCache(source, ttl=10, clock=lambda: now[0]), issuer=ISS, audience=AUD)
    assert verifier.verify(sign(key, claims()))
    now[0] += 60
    assert verifier.verify(sign(key, claims()))
    with pytest.raises(InvalidToken):
        TokenVerifier(JwksCache(lambda: (_ for _ in ()).throw(OSError())), issuer=ISS, audience=AUD).verify(
            sign(key, claims())
        )


# -- the verified-token cache ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_token_sent_again_is_served_from_the_cache(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    token = sign(key, claims())
    first = verifier.verify(token)
    assert len(verifier.verified) == 1
    first["sub"] = "someone else"  # callers get copies: nothing they do reaches the cache
    assert verifier.verify(token)["sub"] == "acct-1"
    assert len(verifier.verified) == 1
    header, _payload, signature = token.split(".")
    forged = f"{header}.{b64(claims(sub='acct-2'))}.{signature}"  # not the cached string: fully checked
    with pytest.raises(InvalidToken):
        verifier.verify(forged)


def test_a_cached_token_is_rejected_once_expired(jwks: dict[str, Any], key: Ed25519PrivateKey) -> None:
    clock = Clock()
    verifier = TokenVerifier(lambda: jwks, issuer=ISS, audience=AUD, leeway=5, clock=clock)
    token = sign(key, claims(exp=int(clock.now) + 60))
    assert verifier.verify(token)["sub"] == "acct-1"
    clock.now += 60 + 4  # inside the leeway
    assert verifier.verify(token)["sub"] == "acct-1"
    clock.now += 1
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)
    assert len(verifier.verified) == 0


def test_a_cached_token_is_rejected_once_its_key_is_retired(key: Ed25519PrivateKey) -> None:
    clock = Clock()
    published = [public_jwk(key.public_key())]
    keys = JwksCache(lambda: {"keys": list(published)}, ttl=300, clock=clock)
    verifier = TokenVerifier(keys, issuer=ISS, audience=AUD)
    token = sign(key, claims())
    assert verifier.verify(token)
    published.clear()  # the issuer retires the key; verifiers see it at their next JWKS fetch
    clock.now += 301
    with pytest.raises(InvalidToken):
        verifier.verify(token)
    assert len(verifier.verified) == 0


def test_the_cache_is_bounded_and_drops_expired_tokens_first(jwks: dict[str, Any], key: Ed25519PrivateKey) -> None:
    clock = Clock()
    verifier = TokenVerifier(lambda: jwks, issuer=ISS, audience=AUD, verified=VerifiedTokens(3), clock=clock)
    now = int(clock.now)
    short = sign(key, claims(jti="short", exp=now + 10))
    long_lived = [sign(key, claims(jti=f"long-{i}")) for i in range(3)]
    for token in (short, *long_lived[:2]):
        verifier.verify(token)
    clock.now += 11
    verifier.verify(long_lived[2])  # full: the expired one goes, the others stay
    assert len(verifier.verified) == 3
    assert verifier.verified.get(short) is None
    assert all(verifier.verified.get(t) is not None for t in long_lived)


def _last_char_low_bits_flipped(segment: str) -> str:
    """The same bytes spelled differently: the unused low bits of the last character set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bits = {2: 4, 3: 2}[len(segment) % 4]  # 2 or 3 characters in the last quantum
    index = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[index | ((1 << unused_bits) - 1)]


@pytest.mark.parametrize(
    "respell",
    [
        pytest.param(lambda t: t + "==", id="padding after the signature"),
        pytest.param(lambda t: t + "=", id="one padding character"),
        pytest.param(lambda t: t.replace(".", "==.", 1), id="padding after the header"),
        pytest.param(
            lambda t: ".".join([*t.split(".")[:2], _last_char_low_bits_flipped(t.split(".")[2])]),
            id="nonzero unused bits",
        ),
        pytest.param(lambda t: t.translate(str.maketrans("-_", "+/")), id="standard alphabet"),
        pytest.param(lambda t: t + "AAA", id="impossible length (4n+1 characters)"),
        pytest.param(lambda t: t.replace(".", ". ", 1), id="white space"),
        pytest.param(lambda t: t + "\n", id="trailing newline"),
    ],
)
def test_only_canonical_base64url_segments_are_accepted(
    verifier: TokenVerifier, key: Ed25519PrivateKey, respell: Any
) -> None:
    """RFC 7515 section 2: base64url without padding; a decoder that accepts other spellings of
    the same signature makes tokens malleable (issue 22)."""
    # A token with both URL-safe characters in it, so that every respelling changes it.
    token = next(t for i in range(1000) if {"-", "_"} <= set(t := sign(key, claims(jti=f"j{i}"))))
    respelled = respell(token)
    assert respelled != token
    with pytest.raises(InvalidToken, match="malformed token"):
        verifier.verify(respelled)
    assert verifier.verify(token)["sub"] == "acct-1"  # the canonical spelling still verifies
