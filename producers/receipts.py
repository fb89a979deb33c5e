"""Signed receipts: the gateway's proof to a publisher that Kafka has its event.

Format 2 (issued now): one signature per request. The receipts of a request's accepted events
are the leaves of an RFC 9162 Merkle tree (``sealstream/merkle.py``); the gateway signs the
tree head once, and each receipt carries its leaf, its inclusion proof and the signed head::

    {"v": 2, "event_id", "tenant", "event_type", "payload_sha256", "received_at",
     "topic", "partition", "offset",                 <- the leaf: these nine fields
     "leaf_index": 3, "proof": ["<base64url>", ...],
     "tree": {"v": 2, "tree_size": 100, "root": "<base64url>", "issued_at", "key_id",
              "signature": "<base64url>", "seal_key_id", "seal"}}

- the leaf's bytes are the canonical JSON of its nine fields (sorted keys, no whitespace,
  UTF-8, RFC 8785-style for these plain strings and integers), hashed as RFC 9162 leaves;
- ``tree.signature``: Ed25519 over the canonical JSON of ``v, tree_size, root, issued_at,
  key_id``; publishers verify it offline with the public key from
  ``/.well-known/sealstream/keys`` (``key_id`` names it) or ``sealstream receipts verify``;
- ``tree.seal``: HMAC-SHA256 over the same bytes with the server's key (``seal_key_id``), for
  the internal audit trail.

Format 1 (receipts issued before): the nine fields with ``key_id``, each signed on its own
(``signature``, ``seal`` over the canonical JSON of those fields). They still verify.

Why a tree: an Ed25519 signature plus seal costs 40-70 µs here, the largest per-event cost of
the gateway; in a tree of 100 leaves a receipt costs about a sixth of that (the security
table of ``python -m benchmarks.gateway``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from producers.turns import TurnBatch
from sealstream import merkle
from sealstream.keys import HmacKeyring, ReceiptSigner, verify_ed25519

FORMAT = 2
# what a receipt says of its event, in both formats
EVENT_FIELDS = (
    "event_id",
    "tenant",
    "event_type",
    "payload_sha256",
    "received_at",
    "topic",
    "partition",
    "offset",
)
LEAF_FIELDS = ("v", *EVENT_FIELDS)
TREE_FIELDS = ("v", "tree_size", "root", "issued_at", "key_id")
# format 1: each receipt signed on its own
RECEIPT_FIELDS = (*EVENT_FIELDS, "key_id")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError("expected base64url text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _canonical(record: dict[str, Any], fields: Sequence[str]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: what ``json.dumps(body, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False).encode()`` gives, computed by orjson."""
    return orjson.dumps({name: record[name] for name in fields}, option=orjson.OPT_SORT_KEYS)


def canonical_bytes(receipt: dict[str, Any]) -> bytes:
    """The signed bytes of a format-1 receipt."""
    return _canonical(receipt, RECEIPT_FIELDS)


def leaf_bytes(receipt: dict[str, Any]) -> bytes:
    """The leaf of a format-2 receipt."""
    return _canonical(receipt, LEAF_FIELDS)


def tree_head_bytes(tree: dict[str, Any]) -> bytes:
    """The signed bytes of a format-2 tree head."""
    return _canonical(tree, TREE_FIELDS)


def payload_digest(payload_json: bytes) -> str:
    return hashlib.sha256(payload_json).hexdigest()


class ReceiptIssuer:
    def __init__(self, signer: ReceiptSigner, seal_keys: HmacKeyring) -> None:
        self.signer = signer
        self.seal_keys = seal_keys

    def issue_tree(self, leaves: Sequence[dict[str, Any]], issued_at: str) -> list[dict[str, Any]]:
        """Format-2 receipts for ``leaves`` (each with the eight event fields of a leaf): one
        tree, one Ed25519 signature and one seal for all of them."""
        bodies = [{"v": FORMAT, **leaf} for leaf in leaves]
        root, proofs = merkle.tree([leaf_bytes(body) for body in bodies])
        tree: dict[str, Any] = {
            "v": FORMAT,
            "tree_size": len(bodies),
            "root": _b64(root),
            "issued_at": issued_at,
            "key_id": self.signer.kid,
        }
        head = tree_head_bytes(tree)
        seal_kid, seal = self.seal_keys.sign(head)
        tree["signature"] = _b64(self.signer.sign(head))
        tree["seal_key_id"] = seal_kid
        tree["seal"] = _b64(seal)
        # each node hash sits in many proofs: encode it once (the encoding was most of the
        # cost of a tree of 100)
        text: dict[bytes, str] = {}
        for proof in proofs:
            for node in proof:
                if node not in text:
                    text[node] = _b64(node)
        return [
            {**body, "leaf_index": index, "proof": [text[p] for p in proof], "tree": tree}
            for index, (body, proof) in enumerate(zip(bodies, proofs, strict=True))
        ]

    def issue_v1(self, **fields: Any) -> dict[str, Any]:
        """A format-1 receipt (each signed on its own), as gateways issued them before format
        2: kept so the tests and the benchmark can show both still verify and what each costs.
        """
        receipt: dict[str, Any] = {**fields, "key_id": self.signer.kid}
        data = canonical_bytes(receipt)
        seal_kid, seal = self.seal_keys.sign(data)
        receipt["signature"] = _b64(self.signer.sign(data))
        receipt["seal_key_id"] = seal_kid
        receipt["seal"] = _b64(seal)
        return receipt

    def check_seal(self, receipt: dict[str, Any]) -> bool:
        """The deployment's own check: the HMAC seal, and (format 2) the inclusion proof."""
        try:
            if receipt.get("v") == FORMAT:
                tree = receipt["tree"]
                return _included(receipt) and bool(
                    self.seal_keys.verify(
                        str(tree.get("seal_key_id")), tree_head_bytes(tree), _unb64(tree["seal"])
                    )
                )
            return bool(
                self.seal_keys.verify(
                    str(receipt.get("seal_key_id")),
                    canonical_bytes(receipt),
                    _unb64(receipt["seal"]),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return False


class SigningWindow:
    """One tree and one signature for every request of one tenant that asks within the same
    turn of the event loop (producers/turns.py): concurrent single-event requests (25 clients,
    one event each) share a signature instead of paying 40-70 µs each. Trees never mix
    tenants: a receipt's proof and tree size would otherwise tell one tenant how many events
    another published in the same instant.

    Each request gets the receipts of its own leaves, in order; ``on_issued`` sees every
    receipt as soon as it is signed, even one whose request was cancelled meanwhile, so an
    event Kafka has is never left without its receipt in the index.
    """

    def __init__(
        self,
        issuer: ReceiptIssuer,
        on_issued: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.issuer = issuer
        self.on_issued = on_issued
        self._turns: TurnBatch[dict[str, Any], dict[str, Any]] = TurnBatch(self._sign)

    async def issue(self, tenant: str, leaves: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self._turns.submit(tenant, leaves)

    def _sign(self, leaves: list[dict[str, Any]]) -> list[dict[str, Any]]:
        issued_at = (
            dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
        receipts = self.issuer.issue_tree(leaves, issued_at)
        if self.on_issued is not None:
            for receipt in receipts:
                self.on_issued(receipt)
        return receipts


def _included(receipt: dict[str, Any]) -> bool:
    tree = receipt["tree"]
    index, size = receipt["leaf_index"], tree["tree_size"]
    if not (isinstance(index, int) and isinstance(size, int)) or tree.get("v") != FORMAT:
        return False
    proof = receipt["proof"]
    if not isinstance(proof, list):
        return False
    return merkle.verify_inclusion(
        leaf_bytes(receipt), index, size, [_unb64(p) for p in proof], _unb64(tree["root"])
    )


def verify_receipt(receipt: dict[str, Any], jwks: dict[str, Any]) -> bool:
    """True when ``receipt`` (format 1 or 2) is signed by a key in ``jwks`` and unchanged since
    signing. Offline: nothing but the published keys."""
    try:
        keys = {k["kid"]: k for k in jwks.get("keys", []) if k.get("kty") == "OKP"}
        if receipt.get("v") == FORMAT:
            tree = receipt["tree"]
            jwk = keys.get(tree["key_id"])
            return (
                jwk is not None
                and _included(receipt)
                and verify_ed25519(jwk, tree_head_bytes(tree), _unb64(tree["signature"]))
            )
        if "v" in receipt:
            return False  # a format this code does not know
        jwk = keys.get(receipt["key_id"])
        if jwk is None:
            return False
        return verify_ed25519(jwk, canonical_bytes(receipt), _unb64(receipt["signature"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def receipts_in(document: Any, depth: int = 0) -> list[dict[str, Any]]:
    """The receipts in what a publisher kept: one receipt, a list of them, a gateway response
    (``{"accepted": [{"receipt": ...}]}``, single or batch), or a list of such documents."""
    if depth > 4:  # a list of responses of lists of receipts is as deep as they come
        raise ValueError("the receipts are nested deeper than a list of gateway responses")
    if isinstance(document, list):
        return [r for item in document for r in receipts_in(item, depth + 1)]
    if not isinstance(document, dict):
        raise ValueError(f"expected a receipt or a gateway response, got {type(document).__name__}")
    if "accepted" in document:
        accepted = document["accepted"] or []
        if not isinstance(accepted, list):
            raise ValueError("a gateway response's accepted is a list of receipts")
        return [r for item in accepted for r in receipts_in(item, depth + 1)]
    if "receipt" in document and isinstance(document["receipt"], dict):
        return [document["receipt"]]
    if "event_id" in document:
        return [document]
    raise ValueError("expected a receipt (with event_id) or a gateway response (with accepted)")
