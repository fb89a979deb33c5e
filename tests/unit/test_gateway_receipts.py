"""Receipts: format 2 (one signed Merkle tree head per request) and format 1 (one signature
each) verify offline with the published keys; any change to a receipt is detected."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from producers.receipts import (
    LEAF_FIELDS,
    RECEIPT_FIELDS,
    ReceiptIssuer,
    canonical_bytes,
    leaf_bytes,
    verify_receipt,
)
from sealstream.keys import load_hmac_keyring, load_receipt_signer
from sealstream.settings import KeySettings


@pytest.fixture
def issuer(tmp_path: Path) -> ReceiptIssuer:
    settings = KeySettings(dir=tmp_path)
    return ReceiptIssuer(load_receipt_signer(settings), load_hmac_keyring(settings))


def fields(n: int = 1) -> dict[str, Any]:
    return {
        "event_id": f"0193a0b2-0000-7000-8000-{n:012d}",
        "tenant": "acme",
        "event_type": "payment",
        "payload_sha256": "ab" * 32,
        "received_at": "2026-11-22T10:00:00.000Z",
        "topic": "events.raw",
        "partition": 3,
        "offset": 42 + n,
    }


def batch(issuer: ReceiptIssuer, size: int) -> list[dict[str, Any]]:
    return issuer.issue_tree([fields(i) for i in range(size)], "2026-11-22T10:00:00.000Z")


def jwks(issuer: ReceiptIssuer) -> dict[str, Any]:
    return {"keys": [issuer.signer.jwk()]}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_every_receipt_of_a_request_verifies_offline(issuer: ReceiptIssuer, size: int) -> None:
    receipts = batch(issuer, size)
    assert [r["leaf_index"] for r in receipts] == list(range(size))
    assert len({json.dumps(r["tree"], sort_keys=True) for r in receipts}) == 1  # one signature
    for receipt in receipts:
        assert verify_receipt(receipt, jwks(issuer))
        assert issuer.check_seal(receipt)
        # what a publisher stores: JSON, read back
        assert verify_receipt(json.loads(json.dumps(receipt)), jwks(issuer))


LEAF_CHANGES = [
    ("offset", 1),
    ("tenant", "globex"),
    ("payload_sha256", "cd" * 32),
    ("partition", 0),
    ("event_id", "0193a0b2-0000-7000-8000-999999999999"),
    ("received_at", "2026-11-22T10:00:00.001Z"),
    ("leaf_index", 1),
    ("v", 1),
]
TREE_CHANGES = [
    ("tree_size", 5),
    ("issued_at", "2026-11-23T10:00:00.000Z"),
    ("key_id", "ed25519-0000000000000000"),
    ("root", "AAAA"),
    ("signature", "!!"),
    ("v", 3),
]


@pytest.mark.parametrize(("field", "value"), LEAF_CHANGES)
def test_a_changed_leaf_fails(issuer: ReceiptIssuer, field: str, value: Any) -> None:
    receipt = batch(issuer, 4)[2]
    receipt[field] = value if field != "offset" else receipt["offset"] + value
    assert not verify_receipt(receipt, jwks(issuer))
    assert not issuer.check_seal(receipt)


@pytest.mark.parametrize(("field", "value"), TREE_CHANGES)
def test_a_changed_tree_head_fails(issuer: ReceiptIssuer, field: str, value: Any) -> None:
    receipt = copy.deepcopy(batch(issuer, 4)[1])
    receipt["tree"][field] = value
    assert not verify_receipt(receipt, jwks(issuer))


def test_a_changed_or_borrowed_proof_fails(issuer: ReceiptIssuer) -> None:
    receipts = batch(issuer, 5)
    first, third = copy.deepcopy(receipts[0]), receipts[2]
    first["proof"] = third["proof"]
    assert not verify_receipt(first, jwks(issuer))
    shorter = {**receipts[0], "proof": receipts[0]["proof"][:-1]}
    assert not verify_receipt(shorter, jwks(issuer))
    # a leaf of one request cannot be shown under another request's signed head
    other = batch(issuer, 5)[0]
    other_leaf = {**other, "tree": receipts[0]["tree"], "event_id": "not-in-that-tree"}
    assert not verify_receipt(other_leaf, jwks(issuer))


def test_wrong_key_set_or_garbage_fails(issuer: ReceiptIssuer, tmp_path: Path) -> None:
    other = load_receipt_signer(KeySettings(dir=tmp_path / "other"))
    receipt = batch(issuer, 2)[0]
    assert not verify_receipt(receipt, {"keys": [other.jwk()]})
    assert not verify_receipt({"event_id": "x"}, jwks(issuer))
    assert not verify_receipt({"v": 2, "tree": "x"}, jwks(issuer))
    assert not verify_receipt({**receipt, "proof": "abc"}, jwks(issuer))
    assert not verify_receipt({**receipt, "proof": [1, 2]}, jwks(issuer))
    assert not verify_receipt({**receipt, "leaf_index": "0"}, jwks(issuer))
    assert not issuer.check_seal({"v": 2})


def test_format_1_receipts_still_verify(issuer: ReceiptIssuer) -> None:
    old = issuer.issue_v1(**fields())
    assert "v" not in old
    assert verify_receipt(old, jwks(issuer))
    assert issuer.check_seal(old)
    for field, value in [("offset", 44), ("tenant", "globex"), ("key_id", "ed25519-00")]:
        assert not verify_receipt({**old, field: value}, jwks(issuer))
        assert not issuer.check_seal({**old, field: value})


def test_canonical_bytes_match_the_documented_json_form(issuer: ReceiptIssuer) -> None:
    receipt = {**batch(issuer, 1)[0], "tenant": "acmé-ü"}
    body = {k: receipt[k] for k in LEAF_FIELDS}
    expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert leaf_bytes(receipt) == expected.encode()
    old = {**issuer.issue_v1(**fields()), "tenant": "acmé-ü"}
    body = {k: old[k] for k in RECEIPT_FIELDS}
    expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_bytes(old) == expected.encode()


def signatures_of(issuer: ReceiptIssuer) -> list[int]:
    """Counts the trees ``issuer`` signs (their sizes, in order)."""
    sizes: list[int] = []
    sign = issuer.issue_tree

    def counted(leaves: Any, issued_at: str) -> list[dict[str, Any]]:
        sizes.append(len(leaves))
        return sign(leaves, issued_at)

    issuer.issue_tree = counted  # type: ignore[method-assign]
    return sizes


async def test_requests_of_one_loop_turn_share_one_signature(issuer: ReceiptIssuer) -> None:
    import asyncio

    from producers.receipts import SigningWindow

    stored: list[dict[str, Any]] = []
    trees = signatures_of(issuer)
    window = SigningWindow(issuer, stored.append)
    requests = [[fields(10 * r + i) for i in range(r + 1)] for r in range(5)]  # 1..5 events
    results = await asyncio.gather(*(window.issue("acme", leaves) for leaves in requests))
    assert trees == [15]
    for leaves, receipts in zip(requests, results, strict=True):
        assert [r["event_id"] for r in receipts] == [leaf["event_id"] for leaf in leaves]
        assert all(verify_receipt(r, jwks(issuer)) for r in receipts)
        assert {r["tree"]["tree_size"] for r in receipts} == {15}
    assert len(stored) == 15
    # a later turn is another window
    await window.issue("acme", [fields(99)])
    assert trees == [15, 1]


async def test_trees_never_mix_tenants(issuer: ReceiptIssuer) -> None:
    """A shared tree would tell one tenant, by its size and proofs, what another published in
    the same instant."""
    import asyncio

    from producers.receipts import SigningWindow

    trees = signatures_of(issuer)
    window = SigningWindow(issuer)
    acme, globex = await asyncio.gather(
        window.issue("acme", [fields(1), fields(2)]), window.issue("globex", [fields(3)])
    )
    assert sorted(trees) == [1, 2]
    assert {r["tree"]["tree_size"] for r in acme} == {2}
    assert globex[0]["tree"]["tree_size"] == 1


async def test_a_cancelled_request_still_has_its_receipts_stored(issuer: ReceiptIssuer) -> None:
    import asyncio

    from producers.receipts import SigningWindow

    stored: list[dict[str, Any]] = []
    window = SigningWindow(issuer, stored.append)
    doomed = asyncio.ensure_future(window.issue("acme", [fields(1)]))
    kept = asyncio.ensure_future(window.issue("acme", [fields(2)]))
    await asyncio.sleep(0)  # one loop step: both have joined the window, the signing is due
    doomed.cancel()
    assert len(await kept) == 1
    assert [r["event_id"] for r in stored] == [fields(1)["event_id"], fields(2)["event_id"]]
