"""Signatures and hash chains: clean chains verify; each kind of tampering is found where it is."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sealstream.integrity import (
    GENESIS,
    ChainHead,
    Problem,
    payload_hash,
    sign,
    signing_bytes,
    walk_chain,
)
from sealstream.keys import HmacKeyring

KEYS = HmacKeyring("k1", {"k1": b"1" * 32})


def build(
    n: int, keys: HmacKeyring = KEYS, head: ChainHead | None = None, prefix: str = "e"
) -> list[dict[str, Any]]:
    head = head or ChainHead()
    entries = []
    for i in range(n):
        payload = {"user": f"u{i}", "amount": i}
        hot = {"user": f"pii:{i:04d}", "amount": i}
        event: dict[str, Any] = {
            "event_id": f"{prefix}{i}",
            "tenant": "acme",
            "event_type": "payment",
            "occurred_at": 1_700_000_000_000 + i,
            "received_at": 1_700_000_000_100 + i,
            "producer": "svc",
            "correlation_id": f"c{i}",
            "source": None,
            "classification": "confidential",
            "route": "both",
            "request_id": f"r{i}",
            "payload_sha256": "ab" * 32,
            "content_sha256": payload_hash(payload),
            "hot_content_sha256": payload_hash(hot),
            "masked_fields": ["user"],
            "enrichment": {"region": "eu"},
            "chain_id": "events.raw/0",
            "payload": payload,
            "hot_payload": hot,
        }
        head = sign(event, keys, head)
        entries.append(event)
    return entries


def payloads(entries: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    return {e["event_id"]: (e["payload"], e["hot_payload"]) for e in entries}


def kinds(
    entries: list[dict[str, Any]], keys: HmacKeyring = KEYS, **kw: Any
) -> set[tuple[str, int | None]]:
    report = walk_chain("events.raw/0", entries, keys, payloads=payloads(entries), **kw)
    return {(f.kind.value, f.seq) for f in report.findings}


def test_clean_chain_verifies() -> None:
    entries = build(6)
    report = walk_chain(
        "events.raw/0", entries, KEYS, anchor=ChainHead(), payloads=payloads(entries)
    )
    assert report.ok and report.checked == 6 and report.last_seq == 6
    assert entries[0]["prev_hash"] == GENESIS
    assert report.head == entries[-1]["hash"]


def test_signing_bytes_are_stable_and_order_free() -> None:
    event = build(1)[0]
    shuffled = dict(reversed(list(event.items())))
    assert signing_bytes(event) == signing_bytes(shuffled)
    assert signing_bytes(event).startswith(b'{"chain_id":"events.raw/0"')


def test_modified_payload() -> None:
    entries = build(5)
    entries[2]["payload"]["amount"] = 999
    assert kinds(entries) == {("modified", 3)}


def test_modified_signed_field() -> None:
    entries = build(5)
    entries[1]["tenant"] = "globex"
    assert kinds(entries) == {("modified", 2)}


def test_altered_signature() -> None:
    entries = build(5)
    entries[3]["signature"] = "00" * 32
    found = kinds(entries)
    assert ("bad_signature", 4) in found


def test_deleted_entry_is_missing() -> None:
    entries = build(5)
    del entries[2]
    assert kinds(entries, anchor=ChainHead()) == {("missing", 3)}


def test_swapped_entries_are_reordered() -> None:
    entries = build(5)
    entries[1], entries[2] = entries[2], entries[1]
    found = kinds(entries, anchor=ChainHead())
    assert found and {k for k, _ in found} == {"reordered"}
    assert min(s for _, s in found if s is not None) == 2


def test_inserted_forgery_with_a_foreign_key() -> None:
    entries = build(4)
    forged = copy.deepcopy(entries[1])
    forged["event_id"] = "evil"
    other = HmacKeyring("k-evil", {"k-evil": b"9" * 32})
    sign(forged, other, ChainHead(forged["seq"] - 1, forged["prev_hash"]))
    entries.insert(2, forged)
    found = kinds(entries, anchor=ChainHead())
    assert ("unknown_key", 2) in found and ("inserted", 2) in found


def test_rotation_old_key_ids_still_verify() -> None:
    first = build(3)
    rotated = KEYS.rotated("k2")
    second = build(3, rotated, ChainHead(first[-1]["seq"], first[-1]["hash"]), prefix="r")
    entries = first + second
    assert {e["key_id"] for e in entries} == {"k1", "k2"}
    assert kinds(entries, rotated, anchor=ChainHead()) == set()
    assert ("unknown_key", 4) in kinds(entries, KEYS, anchor=ChainHead())


@pytest.mark.parametrize("anchor_seq", [2, 3])
def test_anchor_to_a_checkpoint(anchor_seq: int) -> None:
    entries = build(5)
    anchor = ChainHead(entries[anchor_seq - 1]["seq"], entries[anchor_seq - 1]["hash"])
    assert kinds(entries[anchor_seq:], anchor=anchor) == set()
    assert kinds(entries[anchor_seq + 1 :], anchor=anchor) == {("missing", anchor_seq + 1)}


def test_problem_kinds_are_stable_strings() -> None:
    assert [p.value for p in Problem] == [
        "modified",
        "missing",
        "inserted",
        "reordered",
        "bad_signature",
        "unknown_key",
    ]


def test_a_chain_resumes_only_from_a_record_of_its_own() -> None:
    """streams/heads.py ``of_chain``: the worker's test of a chain head candidate."""
    from streams.heads import of_chain

    ours = of_chain("events.raw/0", KEYS)
    good = build(1)[0]
    assert ours(good)
    assert not ours({**good, "chain_id": "events.raw/1"})  # another chain's, however signed
    assert not ours({**good, "signature": "00" * 32})  # a wrong signature with a known key
    assert not ours({**good, "source_offset": 10**9, "seq": 99})  # changed after signing
    assert not ours(build(1, HmacKeyring("k1", {"k1": b"2" * 32}))[0])  # another k1
    # a key since retired: still the chain's record (refusing it would restart from genesis)
    assert ours(build(1, HmacKeyring("k0", {"k0": b"3" * 32}))[0])
