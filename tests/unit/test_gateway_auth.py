"""JWT authentication: the negative suite, key rotation, revocation and the verified-token cache."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sealstream.auth import (
    AuthenticationError,
    Keyring,
    KeyringError,
    Revocations,
    TokenVerifier,
    issue_token,
)
from sealstream.settings import AuthSettings
from tests.patching import this_thread

SECRET_A = "a" * 40
SECRET_B = "b" * 48
NOW = 1_800_000_000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    keys = [
        {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "alg": "RS256"},
        {
            **json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())),
            "kid": "ec-1",
            "alg": "ES256",
        },
        {
            **json.loads(OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key())),
            "kid": "ed-1",
            "alg": "EdDSA",
        },
    ]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


@pytest.fixture
def settings(jwks_file: Path) -> AuthSettings:
    keyring = {"active": "k2", "keys": {"k1": SECRET_A, "k2": SECRET_B}}
    return AuthSettings(hs256_keys=json.dumps(keyring), jwks_file=jwks_file)


@pytest.fixture
def verifier(settings: AuthSettings) -> TokenVerifier:
    return TokenVerifier(settings, Keyring.from_settings(settings))


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": "sealstream-dev",
        "aud": "sealstream-gateway",
        "sub": "svc-orders",
        "tenant": "acme",
        "scope": "events:write",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 600,
        "jti": "t-1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict[str, Any], secret: str = SECRET_B, **headers: Any) -> str:
    return jwt.encode(
        payload, secret, algorithm="HS256", headers={"kid": "k2", "typ": "JWT", **headers}
    )


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(payload).encode()),
            b64url(signature),
        ]
    )


def sign_raw(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """HS256 over exactly these header and payload, bypassing PyJWT's encode-side checks."""
    signing_input = ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode())]
    )
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def rejected(verifier: TokenVerifier, token: str, now: float = NOW + 1) -> str:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token, now=now)
    assert info.value.status == 401
    return info.value.code


def test_valid_token_yields_principal(verifier: TokenVerifier) -> None:
    principal = verifier.verify(hs(claims(roles=["publisher"])), now=NOW + 1)
    assert (principal.subject, principal.tenant, principal.key_id) == ("svc-orders", "acme", "k2")
    assert principal.scopes == {"events:write"} and principal.roles == {"publisher"}


def test_scp_list_is_accepted(verifier: TokenVerifier) -> None:
    token = hs(claims(scope=None, scp=["events:write", "receipts:read"]))
    assert verifier.verify(token, now=NOW + 1).scopes == {"events:write", "receipts:read"}


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_case(verifier: TokenVerifier, alg: str) -> None:
    token = forge({"alg": alg, "kid": "k2", "typ": "JWT"}, claims())
    assert rejected(verifier, token) == "token_alg_not_allowed"


def test_hs256_signed_with_the_rsa_public_key(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = sign_raw({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, claims(), pem)
    assert rejected(verifier, token) == "token_alg_not_allowed"


def test_rs256_with_matching_key_verifies(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1", "typ": "JWT"})
    assert verifier.verify(token, now=NOW + 1).key_id == "rsa-1"


def test_flipped_signature_bit(verifier: TokenVerifier) -> None:
    head, body, sig = hs(claims()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[0] ^= 0x01
    assert rejected(verifier, f"{head}.{body}.{b64url(bytes(raw))}") == "token_signature_invalid"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"exp": NOW - 120}, "token_expired"),
        ({"nbf": NOW + 600}, "token_not_yet_valid"),
        ({"iss": None}, "token_claim_missing"),
        ({"iss": "evil"}, "token_issuer_invalid"),
        ({"iss": "sealstream-dev-evil"}, "token_issuer_invalid"),
        ({"iss": "sealstream"}, "token_issuer_invalid"),  # a prefix of the real issuer
        ({"aud": None}, "token_claim_missing"),
        ({"aud": "sealstream"}, "token_audience_invalid"),
        ({"aud": "sealstream-gateway-x"}, "token_audience_invalid"),
        ({"aud": ["other", "sealstream-gatewa"]}, "token_audience_invalid"),
        ({"sub": None}, "token_claim_missing"),
        ({"tenant": None}, "token_claim_missing"),
        ({"scope": None}, "token_claim_missing"),
        ({"iat": None}, "token_claim_missing"),
        ({"exp": None}, "token_claim_missing"),
        ({"exp": NOW + 48 * 3600}, "token_lifetime_too_long"),
    ],
)
def test_claim_checks(verifier: TokenVerifier, overrides: dict[str, Any], code: str) -> None:
    assert rejected(verifier, hs(claims(**overrides))) == code


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"exp": float("nan")}, "token_invalid"),
        ({"exp": float("inf")}, "token_invalid"),
        ({"exp": float("-inf")}, "token_invalid"),
        ({"exp": 1e300}, "token_invalid"),
        ({"iat": float("nan")}, "token_invalid"),
        ({"nbf": float("inf")}, "token_invalid"),
        ({"exp": "1800000600"}, "token_invalid"),
        ({"exp": True}, "token_invalid"),
        ({"tenant": "../acme"}, "token_claim_invalid"),
        ({"tenant": "ACME"}, "token_claim_invalid"),
        ({"tenant": "a" * 65}, "token_claim_invalid"),
        ({"tenant": ["acme"]}, "token_claim_missing"),
        ({"scope": 7}, "token_claim_missing"),
    ],
)
def test_correctly_signed_tokens_with_hostile_claims_are_refused_never_a_crash(
    verifier: TokenVerifier, overrides: dict[str, Any], code: str
) -> None:
    """NaN and Infinity are JSON to Python's parser (and so to PyJWT): an ``exp`` of NaN once
    made ``int()`` raise and the gateway answer 500."""
    header = {"alg": "HS256", "kid": "k2", "typ": "JWT"}
    token = sign_raw(header, claims(**overrides), SECRET_B.encode())
    assert rejected(verifier, token) == code


def test_issuer_as_list_is_refused(verifier: TokenVerifier) -> None:
    header = {"alg": "HS256", "kid": "k2", "typ": "JWT"}
    token = sign_raw(header, claims(iss=["sealstream-dev"]), SECRET_B.encode())
    assert rejected(verifier, token) == "token_issuer_invalid"


def test_unknown_crit(verifier: TokenVerifier) -> None:
    header = {"alg": "HS256", "kid": "k2", "typ": "JWT", "crit": ["exp-ext"], "exp-ext": 1}
    token = sign_raw(header, claims(), SECRET_B.encode())
    assert rejected(verifier, token) == "token_crit_unsupported"


@pytest.mark.parametrize(
    "kid", ["../../etc/passwd", "' OR '1'='1", "k" * 500, "", 7, None, "k3", "rsa-1\x00"]
)
def test_hostile_or_unknown_kid(verifier: TokenVerifier, kid: Any) -> None:
    token = sign_raw({"alg": "HS256", "typ": "JWT", "kid": kid}, claims(), SECRET_B.encode())
    assert rejected(verifier, token) == "token_kid_unknown"


def test_jku_x5u_jwk_headers_cause_no_request(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the verifier tried to open a connection")

    monkeypatch.setattr(
        socket, "create_connection", this_thread(socket.create_connection, no_network)
    )
    monkeypatch.setattr(socket.socket, "connect", this_thread(socket.socket.connect, no_network))
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from jwt.algorithms import RSAAlgorithm

    headers = {
        "kid": "rsa-1",
        "typ": "JWT",
        "jku": "http://127.0.0.1:9/jwks.json",
        "x5u": "http://127.0.0.1:9/cert.pem",
        "jwk": json.loads(RSAAlgorithm.to_jwk(attacker.public_key())),
    }
    token = jwt.encode(claims(), attacker, algorithm="RS256", headers=headers)
    assert rejected(verifier, token) == "token_signature_invalid"


def test_oversized_token_rejected_before_parsing(verifier: TokenVerifier) -> None:
    token = hs(claims(padding="x" * 10_000))
    assert rejected(verifier, token) == "token_too_large"
    assert verifier.cache.misses == 0  # refused before the cache or any crypto


def test_wrong_or_missing_typ(verifier: TokenVerifier) -> None:
    assert rejected(verifier, hs(claims(), typ="JWE")) == "token_typ_invalid"
    token = jwt.encode(claims(), SECRET_B, algorithm="HS256", headers={"kid": "k2", "typ": None})
    assert rejected(verifier, token) == "token_typ_invalid"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "....", "Bearer x.y.z"])
def test_malformed(verifier: TokenVerifier, token: str) -> None:
    assert rejected(verifier, token) in {"token_malformed", "token_kid_unknown"}


def test_rotation_previous_key_verifies_until_removed(settings: AuthSettings) -> None:
    keyring = Keyring.from_settings(settings)
    verifier = TokenVerifier(settings, keyring)
    old = jwt.encode(claims(), SECRET_A, algorithm="HS256", headers={"kid": "k1", "typ": "JWT"})
    assert verifier.verify(old, now=NOW + 1).key_id == "k1"
    rotated = AuthSettings(hs256_keys=json.dumps({"active": "k2", "keys": {"k2": SECRET_B}}))
    keyring.replace(Keyring.from_settings(rotated))
    assert rejected(verifier, old) == "token_kid_unknown"  # cached entry dropped too


def test_revoked_jti_and_subject(verifier: TokenVerifier) -> None:
    token = hs(claims())
    verifier.verify(token, now=NOW + 1)  # cached now
    verifier.revocations.revoke_token("t-1", NOW + 600)
    assert rejected(verifier, token) == "token_revoked"
    verifier.revocations.reinstate_token("t-1")
    verifier.verify(token, now=NOW + 1)
    verifier.revocations.revoke_subject("svc-orders", issued_before=NOW)
    assert rejected(verifier, token) == "token_revoked"
    newer = hs(claims(iat=NOW + 5, jti="t-2"))
    assert verifier.verify(newer, now=NOW + 6).token_id == "t-2"  # issued after the cut-off


def test_cache_hits_skip_signature_and_expire_at_exp(verifier: TokenVerifier) -> None:
    token = hs(claims(exp=NOW + 100))
    verifier.verify(token, now=NOW + 1)
    verifier.verify(token, now=NOW + 2)
    assert (verifier.cache.hits, verifier.cache.misses) == (1, 1)
    assert rejected(verifier, token, now=NOW + 100 + 60) == "token_expired"


def test_cache_is_bounded(settings: AuthSettings) -> None:
    small = settings.model_copy(update={"cache_size": 3})
    verifier = TokenVerifier(small, Keyring.from_settings(small))
    for i in range(10):
        verifier.verify(hs(claims(jti=f"t{i}")), now=NOW + 1)
    assert len(verifier.cache) == 3


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"keys": {"short": "x" * 31}}, "at least 32"),
        ({"keys": {"k": "y" * 40}, "active": "nope"}, "not in the keyring"),
        ({"nokeys": {}}, "must be JSON"),
        ({"keys": {"bad kid!": "z" * 40}}, "must match"),
    ],
)
def test_bad_keyrings_refused_at_startup(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.from_settings(AuthSettings(hs256_keys=json.dumps(doc)))


def test_no_keys_at_all_is_refused() -> None:
    with pytest.raises(KeyringError, match="no JWT verification keys"):
        Keyring.from_settings(AuthSettings())


def test_issue_token_round_trip(settings: AuthSettings) -> None:
    keyring = Keyring.from_settings(settings)
    token = issue_token(keyring, settings, "dev", "acme", ["events:write"], ttl_s=60)
    assert TokenVerifier(settings, keyring).verify(token).tenant == "acme"
    assert jwt.get_unverified_header(token)["kid"] == "k2"


def test_revocations_len() -> None:
    revocations = Revocations()
    revocations.revoke_token("a", time.time() + 10)
    revocations.revoke_subject("s", time.time())
    assert len(revocations) == 2


def test_a_rotated_keyring_file_is_trusted_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "jwt.json"
    path.write_text(json.dumps({"active": "k1", "keys": {"k1": SECRET_A}}))
    path.chmod(0o600)  # a keyring others may read is refused (tests/unit/test_key_hygiene.py)
    settings = AuthSettings(hs256_keys_file=path)
    reloads = []

    def reload() -> Keyring:
        reloads.append(time.monotonic())
        return Keyring.from_settings(settings)

    verifier = TokenVerifier(settings, Keyring.from_settings(settings), reload=reload)
    old = issue_token(Keyring.from_settings(settings), settings, "svc", "acme", ["events:write"])
    assert verifier.verify(old).key_id == "k1" and reloads == []  # known kid: no reload

    path.write_text(json.dumps({"active": "k2", "keys": {"k1": SECRET_A, "k2": SECRET_B}}))
    new = issue_token(Keyring.from_settings(settings), settings, "svc", "acme", ["events:write"])
    assert verifier.verify(new).key_id == "k2" and len(reloads) == 1
    assert verifier.verify(old).key_id == "k1"  # the old key still verifies

    forged = jwt.encode(
        {"sub": "x"}, SECRET_B * 2, algorithm="HS256", headers={"kid": "k9", "typ": "JWT"}
    )
    for _ in range(5):  # unknown kids re-read the file at most once per interval
        with pytest.raises(AuthenticationError) as info:
            verifier.verify(forged)
        assert info.value.code == "token_kid_unknown"
    assert len(reloads) == 1
