"""Bearer-JWT authentication: a keyring bound to algorithms, strict claim checks, revocation,
and a verified-token cache so steady-state requests skip the signature check.

Rules that hold for every token, in the order they are checked (cheapest first):

1. size: over ``max_token_bytes`` is refused before any parsing or crypto;
2. header: ``kid`` must name a key in the keyring, ``alg`` must equal the algorithm that key is
   bound to (so ``none``, or HS256 signed with an RSA public key, can never verify), ``typ``
   must be allowed, any ``crit`` is refused (we implement no extensions), and ``jku``/``x5u``/
   ``jwk`` are ignored: keys come only from local configuration, never from the token;
3. signature and registered claims by PyJWT, with exactly one algorithm allowed;
4. required claims ``exp iat iss aud sub tenant`` and ``scope``/``scp``; lifetime bounded;
5. revocation by ``jti`` or by subject.

A cache hit (keyed by the token's SHA-256) repeats only steps 1 and 5 and the expiry check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from sealstream.auth.errors import AuthenticationError
from sealstream.keys import load_hmac_keyring, read_private
from sealstream.settings import AuthSettings, KeySettings

log = logging.getLogger("sealstream.auth")

MIN_HMAC_KEY_BYTES = 32
_KID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# as the envelope's (validation.py), or '*' (operators' and auditors' tokens)
_TENANT_RE = re.compile(r"^(?:[a-z0-9][a-z0-9_-]{0,63}|\*)$")
_ASYMMETRIC: dict[str, Any] = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}


class KeyringError(ValueError):
    """The configured keys are unusable; raised at start-up, never per request."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    alg: str
    key: Any = field(repr=False)


@dataclass(frozen=True)
class Principal:
    """Who is calling, as proven by a verified token."""

    subject: str
    tenant: str
    scopes: frozenset[str]
    roles: frozenset[str]
    issuer: str
    token_id: str | None
    issued_at: int
    expires_at: int
    key_id: str


def _secret_bytes(value: str) -> bytes:
    if value.startswith("base64:"):
        return base64.b64decode(value.removeprefix("base64:"), validate=True)
    return value.encode()


class Keyring:
    """Verification keys by ``kid``, each bound to exactly one algorithm."""

    def __init__(self, keys: dict[str, VerificationKey], active_hs256: str | None = None) -> None:
        self._keys = dict(keys)
        self.active_hs256 = active_hs256
        self.generation = 0

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Keyring:
        keys: dict[str, VerificationKey] = {}
        active: str | None = None
        raw: str | None = None
        if settings.hs256_keys_file is not None:
            raw = read_private(settings.hs256_keys_file).decode()
        elif settings.hs256_keys is not None:
            raw = settings.hs256_keys.get_secret_value()
        if raw is not None:
            active, secrets = cls._parse_hs256(raw)
            keys.update({kid: VerificationKey(kid, "HS256", s) for kid, s in secrets.items()})
        if settings.jwks_file is not None:
            keys.update(cls._parse_jwks(settings.jwks_file))
        if not keys:
            raise KeyringError(
                "no JWT verification keys configured: set SEALSTREAM_AUTH_HS256_KEYS(_FILE) "
                "or SEALSTREAM_AUTH_JWKS_FILE"
            )
        return cls(keys, active)

    @staticmethod
    def _parse_hs256(raw: str) -> tuple[str | None, dict[str, bytes]]:
        try:
            doc = json.loads(raw)
            entries = doc["keys"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise KeyringError(
                'HS256 keyring must be JSON {"active": kid, "keys": {kid: secret}}'
            ) from exc
        secrets: dict[str, bytes] = {}
        for kid, value in entries.items():
            if not _KID_RE.match(kid):
                raise KeyringError(f"key id {kid!r} must match {_KID_RE.pattern}")
            secret = _secret_bytes(str(value))
            if len(secret) < MIN_HMAC_KEY_BYTES:
                raise KeyringError(
                    f"HS256 key {kid!r} is {len(secret)} bytes; at least {MIN_HMAC_KEY_BYTES} "
                    "are required (RFC 7518 section 3.2)"
                )
            secrets[kid] = secret
        active = doc.get("active")
        if active is not None and active not in secrets:
            raise KeyringError(f"active HS256 key {active!r} is not in the keyring")
        return active, secrets

    @staticmethod
    def _parse_jwks(path: Path) -> dict[str, VerificationKey]:
        keys: dict[str, VerificationKey] = {}
        for jwk in json.loads(path.read_text()).get("keys", []):
            kid, alg = jwk.get("kid"), jwk.get("alg")
            if not isinstance(kid, str) or not _KID_RE.match(kid):
                raise KeyringError(f"JWKS key without a valid kid: {kid!r}")
            if alg not in _ASYMMETRIC:
                raise KeyringError(
                    f"JWKS key {kid!r} must name its alg, one of {sorted(_ASYMMETRIC)}"
                )
            if "d" in jwk:
                raise KeyringError(f"JWKS key {kid!r} contains a private part; give public keys")
            keys[kid] = VerificationKey(kid, alg, _ASYMMETRIC[alg].from_jwk(json.dumps(jwk)))
        return keys

    def get(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)

    def replace(self, other: Keyring) -> None:
        """Swap in a reloaded keyring; cached verifications made with old keys are dropped."""
        self._keys = dict(other._keys)
        self.active_hs256 = other.active_hs256
        self.generation += 1

    def signing_secret(self, kid: str | None = None) -> tuple[str, bytes]:
        """The HS256 secret to mint dev tokens with (``sealstream tokens issue``)."""
        kid = kid or self.active_hs256
        key = self._keys.get(kid) if kid else None
        if key is None or key.alg != "HS256":
            raise KeyringError(f"no HS256 key {kid!r} to sign with")
        return key.kid, key.key


class Revocations:
    """Revoked token ids (until they would expire anyway) and subjects (tokens issued before)."""

    def __init__(self) -> None:
        self._jti: dict[str, float] = {}
        self._subjects: dict[str, float] = {}
        self._lock = threading.Lock()

    def revoke_token(self, jti: str, expires_at: float) -> None:
        with self._lock:
            self._jti[jti] = expires_at

    def revoke_subject(self, subject: str, issued_before: float) -> None:
        with self._lock:
            self._subjects[subject] = max(issued_before, self._subjects.get(subject, 0.0))

    def reinstate_token(self, jti: str) -> None:
        with self._lock:
            self._jti.pop(jti, None)

    def reinstate_subject(self, subject: str) -> None:
        with self._lock:
            self._subjects.pop(subject, None)

    def is_revoked(self, principal: Principal) -> bool:
        if principal.token_id is not None and principal.token_id in self._jti:
            return True
        before = self._subjects.get(principal.subject)
        return before is not None and principal.issued_at <= before

    def __len__(self) -> int:
        return len(self._jti) + len(self._subjects)


class _Cache:
    """Bounded LRU of verified tokens, keyed by the token's SHA-256."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[Principal, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, digest: bytes, generation: int, now: float, leeway: int) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None or entry[1] != generation or entry[0].expires_at <= now - leeway:
                if entry is not None:
                    del self._entries[digest]
                self.misses += 1
                return None
            self._entries.move_to_end(digest)
            self.hits += 1
            return entry[0]

    def put(self, digest: bytes, principal: Principal, generation: int) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._entries[digest] = (principal, generation)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _fail(code: str, message: str) -> AuthenticationError:
    return AuthenticationError(message, code=code)


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, decoded without judging it (our own checks come next, in order)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise _fail("token_malformed", "token is not a JWS compact serialization (a.b.c)")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail("token_malformed", "token header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise _fail("token_malformed", "token header is not a JSON object")
    return header


class TokenVerifier:
    """Turns a bearer token into a :class:`Principal` or an :class:`AuthenticationError`."""

    def __init__(
        self,
        settings: AuthSettings,
        keyring: Keyring,
        revocations: Revocations | None = None,
        reload: Callable[[], Keyring] | None = None,
        reload_interval_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        # A token with a kid we do not know re-reads the keyring (at most every few seconds),
        # so a rotated key (``sealstream keys rotate jwt``) is trusted without a restart.
        self._reload = reload
        self._reload_interval_s = reload_interval_s
        self._reloaded_at = 0.0
        self._reload_lock = threading.Lock()
        self.revocations = revocations or Revocations()
        self.cache = _Cache(settings.cache_size)
        self._allowed_typ = {t.lower() for t in settings.allowed_typ}

    def verify(self, token: str, now: float | None = None) -> Principal:
        if len(token) > self.settings.max_token_bytes:
            raise _fail(
                "token_too_large", f"token is larger than {self.settings.max_token_bytes} bytes"
            )
        now = time.time() if now is None else now
        digest = hashlib.sha256(token.encode()).digest()
        principal = self.cache.get(digest, self.keyring.generation, now, self.settings.leeway_s)
        if principal is None:
            try:
                principal = self._verify_uncached(token, now)
            except AuthenticationError:
                raise
            except (ValueError, TypeError, OverflowError, KeyError) as exc:
                # whatever a crafted token makes a library raise is a refusal, never a 500
                raise _fail("token_invalid", "token rejected: malformed claims") from exc
            self.cache.put(digest, principal, self.keyring.generation)
        if self.revocations.is_revoked(principal):
            raise _fail("token_revoked", "token has been revoked; obtain a new one")
        return principal

    def _reloaded(self, kid: str) -> VerificationKey | None:
        if self._reload is None:
            return None
        with self._reload_lock:
            if time.monotonic() - self._reloaded_at < self._reload_interval_s:
                return self.keyring.get(kid)
            self._reloaded_at = time.monotonic()
            try:
                fresh = self._reload()
            except (KeyringError, OSError) as exc:  # keep serving with the keys we have
                log.warning("JWT keyring reload failed: %s", exc)
                return None
            if fresh._keys != self.keyring._keys:
                log.info("JWT keyring reloaded: key ids %s", sorted(fresh._keys))
                self.keyring.replace(fresh)
        return self.keyring.get(kid)

    def _verify_uncached(self, token: str, now: float) -> Principal:
        header = _unverified_header(token)
        kid = header.get("kid")
        if not isinstance(kid, str) or not _KID_RE.match(kid):
            raise _fail("token_kid_unknown", "token header needs a valid 'kid'")
        key = self.keyring.get(kid) or self._reloaded(kid)
        if key is None:
            raise _fail("token_kid_unknown", f"no verification key with kid {kid!r}")
        if header.get("alg") != key.alg:
            raise _fail("token_alg_not_allowed", f"key {kid!r} verifies {key.alg} tokens only")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self._allowed_typ:
            raise _fail(
                "token_typ_invalid", f"token 'typ' must be one of {self.settings.allowed_typ}"
            )
        if "crit" in header:
            raise _fail("token_crit_unsupported", "token lists critical header extensions")
        try:
            # Time claims are checked below against the caller's clock, so the cache and the
            # verifier agree on "now" (and tests can set it).
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.alg],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidIssuerError as exc:
            raise _fail("token_issuer_invalid", "token issuer is not accepted") from exc
        except jwt.InvalidAudienceError as exc:
            raise _fail("token_audience_invalid", "token audience is not this gateway") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _fail("token_claim_missing", f"token lacks the '{exc.claim}' claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise _fail("token_signature_invalid", "token signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise _fail("token_invalid", f"token rejected: {exc}") from exc
        self._check_times(claims, now)
        return self._principal(claims, key.kid, now)

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        leeway = self.settings.leeway_s
        times: dict[str, int] = {}
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not -(2**62) < value < 2**62
            ):
                raise _fail("token_invalid", f"token '{name}' must be a NumericDate")
            times[name] = int(value)
        if times["exp"] <= now - leeway:
            raise _fail("token_expired", "token has expired")
        if times["iat"] > now + leeway or times.get("nbf", 0) > now + leeway:
            raise _fail("token_not_yet_valid", "token is not valid yet (nbf or iat)")
        if times["exp"] - times["iat"] > self.settings.max_lifetime_s:
            raise _fail(
                "token_lifetime_too_long",
                f"token lifetime exceeds {self.settings.max_lifetime_s} s; use short-lived tokens",
            )

    def _principal(self, claims: dict[str, Any], kid: str, now: float) -> Principal:
        tenant = claims.get("tenant")
        if not isinstance(tenant, str) or not tenant:
            raise _fail("token_claim_missing", "token lacks the 'tenant' claim")
        if not _TENANT_RE.match(tenant):  # it becomes a label, a partition key, a path segment
            raise _fail("token_claim_invalid", "token 'tenant' is not a valid tenant id")
        raw_scope = claims.get("scope", claims.get("scp"))
        if isinstance(raw_scope, str):
            scopes = frozenset(raw_scope.split())
        elif isinstance(raw_scope, list) and all(isinstance(s, str) for s in raw_scope):
            scopes = frozenset(raw_scope)
        else:
            raise _fail("token_claim_missing", "token lacks the 'scope' (or 'scp') claim")
        roles_claim = claims.get("roles", [])
        roles = (
            frozenset(r for r in roles_claim if isinstance(r, str))
            if isinstance(roles_claim, list)
            else frozenset()
        )
        iat, exp = int(claims["iat"]), int(claims["exp"])
        jti = claims.get("jti")
        return Principal(
            subject=str(claims["sub"]),
            tenant=tenant,
            scopes=scopes,
            roles=roles,
            issuer=str(claims["iss"]),
            token_id=jti if isinstance(jti, str) else None,
            issued_at=iat,
            expires_at=exp,
            key_id=kid,
        )


def issue_token(
    keyring: Keyring,
    settings: AuthSettings,
    subject: str,
    tenant: str,
    scopes: list[str],
    roles: list[str] | None = None,
    ttl_s: int = 3600,
    kid: str | None = None,
    jti: str | None = None,
    now: float | None = None,
) -> str:
    """Mint an HS256 token with the active key (the dev helper ``sealstream tokens issue``)."""
    kid, secret = keyring.signing_secret(kid)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject,
        "tenant": tenant,
        "scope": " ".join(scopes),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": jti or str(uuid.uuid4()),
    }
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid, "typ": "JWT"})


JWT_KEYS_FILE = "jwt-hs256.json"


def auth_settings(keys: KeySettings | None = None) -> AuthSettings:
    """Auth settings from the environment; with no keys configured, the local stack's
    generated HS256 keyring (``<keys dir>/jwt-hs256.json``) is used."""
    auth = AuthSettings()
    if auth.hs256_keys is None and auth.hs256_keys_file is None and auth.jwks_file is None:
        keys = keys or KeySettings()
        load_hmac_keyring(keys, JWT_KEYS_FILE)  # creates it if allowed, fails clearly if not
        auth = auth.model_copy(update={"hs256_keys_file": keys.dir / JWT_KEYS_FILE})
    return auth
