"""Signed receipts: the gateway's proof to a publisher that Kafka has its event.

A receipt is ``{event_id, tenant, event_type, payload_sha256, received_at, topic, partition,
offset, key_id}``. Its canonical bytes are the UTF-8 JSON of those fields with sorted keys and
no whitespace (RFC 8785-style for these plain strings and integers). They carry

- ``signature``: Ed25519 over the canonical bytes, base64url; publishers verify it offline
  with the public key from ``/.well-known/sealstream/keys`` (``key_id`` names it);
- ``seal``: HMAC-SHA256 over the same bytes with the server's key (``seal_key_id``), for the
  internal audit trail: it proves the receipt came from this deployment even if the Ed25519
  key were later published or rotated away.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from sealstream.keys import HmacKeyring, ReceiptSigner, verify_ed25519

RECEIPT_FIELDS = (
    "event_id",
    "tenant",
    "event_type",
    "payload_sha256",
    "received_at",
    "topic",
    "partition",
    "offset",
    "key_id",
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_bytes(receipt: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: what ``json.dumps(body, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False).encode()`` gives, computed by orjson."""
    body = {name: receipt[name] for name in RECEIPT_FIELDS}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def payload_digest(payload_json: bytes) -> str:
    return hashlib.sha256(payload_json).hexdigest()


class ReceiptIssuer:
    def __init__(self, signer: ReceiptSigner, seal_keys: HmacKeyring) -> None:
        self.signer = signer
        self.seal_keys = seal_keys

    def issue(
        self,
        *,
        event_id: str,
        tenant: str,
        event_type: str,
        payload_sha256: str,
        received_at: str,
        topic: str,
        partition: int,
        offset: int,
    ) -> dict[str, Any]:
        receipt: dict[str, Any] = {
            "event_id": event_id,
            "tenant": tenant,
            "event_type": event_type,
            "payload_sha256": payload_sha256,
            "received_at": received_at,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key_id": self.signer.kid,
        }
        data = canonical_bytes(receipt)
        seal_kid, seal = self.seal_keys.sign(data)
        receipt["signature"] = _b64(self.signer.sign(data))
        receipt["seal_key_id"] = seal_kid
        receipt["seal"] = _b64(seal)
        return receipt

    def check_seal(self, receipt: dict[str, Any]) -> bool:
        ok = self.seal_keys.verify(
            str(receipt.get("seal_key_id")), canonical_bytes(receipt), _unb64(receipt["seal"])
        )
        return bool(ok)


def verify_receipt(receipt: dict[str, Any], jwks: dict[str, Any]) -> bool:
    """True when ``receipt`` is signed by a key in ``jwks`` and unchanged since signing."""
    try:
        keys = {k["kid"]: k for k in jwks.get("keys", []) if k.get("kty") == "OKP"}
        jwk = keys.get(receipt["key_id"])
        if jwk is None:
            return False
        return verify_ed25519(jwk, canonical_bytes(receipt), _unb64(receipt["signature"]))
    except (KeyError, TypeError, ValueError):
        return False
