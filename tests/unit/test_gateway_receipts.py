"""Receipts: Ed25519 signature verifiable offline, HMAC seal, tampering detected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from producers.receipts import ReceiptIssuer, verify_receipt
from sealstream.keys import load_hmac_keyring, load_receipt_signer
from sealstream.settings import KeySettings


@pytest.fixture
def issuer(tmp_path: Path) -> ReceiptIssuer:
    settings = KeySettings(dir=tmp_path)
    return ReceiptIssuer(load_receipt_signer(settings), load_hmac_keyring(settings))


def make(issuer: ReceiptIssuer) -> dict[str, Any]:
    return issuer.issue(
        event_id="0193a0b2-0000-7000-8000-000000000001",
        tenant="acme",
        event_type="payment",
        payload_sha256="ab" * 32,
        received_at="2026-11-22T10:00:00.000Z",
        topic="events.raw",
        partition=3,
        offset=42,
    )


def test_receipt_verifies_offline_and_seal_checks(issuer: ReceiptIssuer) -> None:
    receipt = make(issuer)
    jwks = {"keys": [issuer.signer.jwk()]}
    assert verify_receipt(receipt, jwks)
    assert issuer.check_seal(receipt)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("offset", 43),
        ("tenant", "globex"),
        ("payload_sha256", "cd" * 32),
        ("partition", 0),
        ("key_id", "ed25519-0000000000000000"),
    ],
)
def test_tampered_receipt_fails(issuer: ReceiptIssuer, field: str, value: Any) -> None:
    receipt = {**make(issuer), field: value}
    assert not verify_receipt(receipt, {"keys": [issuer.signer.jwk()]})
    assert not issuer.check_seal(receipt)


def test_wrong_key_set_or_garbage_fails(issuer: ReceiptIssuer, tmp_path: Path) -> None:
    other = load_receipt_signer(KeySettings(dir=tmp_path / "other"))
    receipt = make(issuer)
    assert not verify_receipt(receipt, {"keys": [other.jwk()]})
    assert not verify_receipt({**receipt, "signature": "!!"}, {"keys": [issuer.signer.jwk()]})
    assert not verify_receipt({"event_id": "x"}, {"keys": [issuer.signer.jwk()]})


def test_canonical_bytes_match_the_documented_json_form(issuer: ReceiptIssuer) -> None:
    import json

    from producers.receipts import RECEIPT_FIELDS, canonical_bytes

    receipt = {**make(issuer), "tenant": "acmé-ü"}
    body = {k: receipt[k] for k in RECEIPT_FIELDS}
    expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_bytes(receipt) == expected.encode()
