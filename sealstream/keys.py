"""Signing keys shared by the stages: HMAC-SHA256 keyrings and the Ed25519 receipt key.

Every key has an id; signatures record it, so after a rotation old signatures still verify
with the old key while new ones use the active key. Keys come from configuration (environment
or files); for the local stack they are generated on first use into the stack's key directory
with owner-only permissions. Secrets are never logged, and ``repr`` never shows them.

Files in a key directory:

- ``hmac.json`` ``{"active": kid, "keys": {kid: "base64:..."}}``: event signatures, seals
- ``jwt-hs256.json`` the same shape — the gateway's JWT keyring for locally minted tokens
- ``receipt-ed25519.pem`` PKCS#8 private key — receipts publishers verify offline
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shlex
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from sealstream.settings import KeySettings

MIN_SECRET_BYTES = 32


class KeyError_(ValueError):
    """A key configuration that cannot be used (named to avoid shadowing ``KeyError``)."""


def _decode_secret(value: str) -> bytes:
    if value.startswith("base64:"):
        return base64.b64decode(value.removeprefix("base64:"), validate=True)
    return value.encode()


class InsecureKeyFile(KeyError_):
    """A key or credential file others than its owner may read, or that the owner does not own."""


def check_private(path: Path) -> None:
    """Refuse a secret ``path`` that is group- or world-accessible, or not this user's: such a
    file may already have been read by another account, and using it hides that. The message
    names the command that fixes it (what ssh does for private keys)."""
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise InsecureKeyFile(
            f"key file {path} is readable by others (mode {mode:04o}); "
            f"it must be readable by its owner only: chmod 600 {shlex.quote(str(path))}"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise InsecureKeyFile(
            f"key file {path} belongs to uid {st.st_uid}, not to this user ({os.getuid()}): "
            f"chown {os.getuid()} {shlex.quote(str(path))}"
        )


def read_private(path: Path) -> bytes:
    """The bytes of a key or credential file, after :func:`check_private`."""
    check_private(path)
    return path.read_bytes()


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) readable and writable by its owner only; its
    directory, when created here, is the owner's only too."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@dataclass(frozen=True)
class HmacKeyring:
    """HMAC-SHA256 keys by id; ``active`` signs, every key verifies."""

    active: str
    keys: dict[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise KeyError_(f"active key {self.active!r} is not in the keyring")
        for kid, secret in self.keys.items():
            if len(secret) < MIN_SECRET_BYTES:
                raise KeyError_(f"HMAC key {kid!r} is shorter than {MIN_SECRET_BYTES} bytes")

    @classmethod
    def from_json(cls, text: str) -> HmacKeyring:
        try:
            doc = json.loads(text)
            return cls(doc["active"], {k: _decode_secret(v) for k, v in doc["keys"].items()})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise KeyError_('keyring must be JSON {"active": kid, "keys": {kid: secret}}') from exc

    @classmethod
    def generate(cls, kid: str | None = None) -> HmacKeyring:
        kid = kid or f"hmac-{secrets.token_hex(4)}"
        return cls(kid, {kid: secrets.token_bytes(32)})

    def to_json(self) -> str:
        keys = {k: "base64:" + base64.b64encode(v).decode() for k, v in self.keys.items()}
        return json.dumps({"active": self.active, "keys": keys}, indent=2)

    def rotated(self, kid: str | None = None) -> HmacKeyring:
        """A keyring with a new active key; the old keys stay for verification."""
        fresh = HmacKeyring.generate(kid)
        return HmacKeyring(fresh.active, {**self.keys, **fresh.keys})

    def sign(self, data: bytes) -> tuple[str, bytes]:
        return self.active, hmac.new(self.keys[self.active], data, hashlib.sha256).digest()

    def verify(self, kid: str, data: bytes, mac: bytes) -> bool | None:
        """True/False, or None when the key id is unknown (a distinct finding for auditors)."""
        secret = self.keys.get(kid)
        if secret is None:
            return None
        return hmac.compare_digest(hmac.new(secret, data, hashlib.sha256).digest(), mac)


@dataclass(frozen=True)
class ReceiptSigner:
    """The Ed25519 key that signs receipts; its id is derived from the public key."""

    private_key: Ed25519PrivateKey = field(repr=False)

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @cached_property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @cached_property
    def kid(self) -> str:
        return "ed25519-" + hashlib.sha256(self.public_bytes).hexdigest()[:16]

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK (RFC 8037), for ``/.well-known/sealstream/keys``."""
        x = base64.urlsafe_b64encode(self.public_bytes).rstrip(b"=").decode()
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }


def verify_ed25519(jwk: dict[str, Any], data: bytes, signature: bytes) -> bool:
    """Check a receipt signature with a public JWK (what publishers do offline)."""
    raw = base64.urlsafe_b64decode(str(jwk["x"]) + "=" * (-len(str(jwk["x"])) % 4))
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _load_or_create(path: Path, generate: bool, make: Any) -> bytes:
    if path.exists():
        return read_private(path)
    if not generate:
        raise KeyError_(f"key file {path} is missing (and SEALSTREAM_KEYS_GENERATE is off)")
    data: bytes = make()
    try:
        write_private(path, data)
    except FileExistsError:  # another process created it first: use theirs
        return read_private(path)
    return data


def load_hmac_keyring(settings: KeySettings, name: str = "hmac.json") -> HmacKeyring:
    if name == "hmac.json" and settings.hmac_keys is not None:
        return HmacKeyring.from_json(settings.hmac_keys.get_secret_value())
    raw = _load_or_create(
        settings.dir / name, settings.generate, lambda: HmacKeyring.generate().to_json().encode()
    )
    return HmacKeyring.from_json(raw.decode())


class KeyringFile:
    """A keyring that follows its file: re-read when the file changes (``sealstream keys
    rotate``), so long-running readers (the audit endpoint) know new key ids at once."""

    def __init__(self, settings: KeySettings, name: str = "hmac.json") -> None:
        self.settings, self.name = settings, name
        self._stamp: tuple[int, int] | None = None
        self._ring = load_hmac_keyring(settings, name)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = (self.settings.dir / self.name).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def current(self) -> HmacKeyring:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            self._ring, self._stamp = load_hmac_keyring(self.settings, self.name), stamp
        return self._ring


def save_hmac_keyring(settings: KeySettings, keyring: HmacKeyring, name: str = "hmac.json") -> Path:
    """Replace a keyring file atomically (rotation)."""
    path = settings.dir / name
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    write_private(tmp, keyring.to_json().encode())
    tmp.replace(path)
    return path


def load_receipt_signer(settings: KeySettings) -> ReceiptSigner:
    def make() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    pem = _load_or_create(settings.dir / "receipt-ed25519.pem", settings.generate, make)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_("receipt-ed25519.pem does not hold an Ed25519 private key")
    return ReceiptSigner(key)
