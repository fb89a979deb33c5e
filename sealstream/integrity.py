"""What makes a stored event provable: its canonical byte form, its HMAC-SHA256 signature and
its place in a per-partition hash chain. The stream processors produce these; ``verify`` and
the sinks check them, so the definitions live here, shared, and nowhere else.

Canonical form (version 1) of a signed event: UTF-8 JSON, keys sorted, no whitespace, of

    v, event_id, tenant, event_type, occurred_at, received_at   (timestamps: integer Unix ms)
    producer, correlation_id, request_id, source, classification, route
    payload_sha256       the gateway's hash of the payload as published (as in the receipt)
    content_sha256       SHA-256 of the stored original payload's canonical JSON (cold copy)
    hot_content_sha256   SHA-256 of the masked payload's canonical JSON (hot copy)
    masked_fields        sorted list of payload fields masked in the hot copy
    enrichment           object of the enrichers' string attributes
    chain_id, seq, prev_hash, key_id

``signature`` = HMAC-SHA256(key[key_id], canonical bytes), hex. The chain entry's ``hash`` =
SHA-256(bytes.fromhex(prev_hash) + bytes.fromhex(signature)), hex; the first entry of a chain
has ``prev_hash`` = 64 zeros. Every field a person could change in a stored row is either in
the canonical form or hashed into it, so an edit breaks the signature; removing, inserting or
reordering rows breaks ``seq``/``prev_hash`` continuity.
"""

from __future__ import annotations

import decimal
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from sealstream.keys import HmacKeyring

CANONICAL_VERSION = 1
GENESIS = "0" * 64
SIGNED_FIELDS = (
    "event_id",
    "tenant",
    "event_type",
    "occurred_at",
    "received_at",
    "producer",
    "correlation_id",
    "request_id",
    "source",
    "classification",
    "route",
    "payload_sha256",
    "content_sha256",
    "hot_content_sha256",
    "masked_fields",
    "enrichment",
    "chain_id",
    "seq",
    "prev_hash",
    "key_id",
)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; the one JSON form every hash here is taken of.
    Datetimes are RFC 3339 strings, decimals their exact string, bytes hex."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=_default)


def payload_hash(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def signing_bytes(event: Mapping[str, Any]) -> bytes:
    body = {name: event[name] for name in SIGNED_FIELDS}
    body["masked_fields"] = sorted(body["masked_fields"])
    body["v"] = CANONICAL_VERSION
    return canonical_json(body)


def chain_hash(prev_hash: str, signature: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(signature)).hexdigest()


@dataclass
class ChainHead:
    """Where a chain stands: the last sequence number and entry hash."""

    seq: int = 0
    hash: str = GENESIS


def sign(event: dict[str, Any], keys: HmacKeyring, head: ChainHead) -> ChainHead:
    """Fill in ``seq``, ``prev_hash``, ``key_id``, ``signature`` and ``hash``; return the new head.

    ``event`` must hold every other signed field (``chain_id`` included).
    """
    event["seq"] = head.seq + 1
    event["prev_hash"] = head.hash
    event["key_id"] = keys.active
    _, mac = keys.sign(signing_bytes(event))
    event["signature"] = mac.hex()
    event["hash"] = chain_hash(head.hash, event["signature"])
    return ChainHead(event["seq"], event["hash"])


class Problem(StrEnum):
    MODIFIED = "modified"  # content no longer matches its hash or signature
    MISSING = "missing"  # a gap in the sequence
    INSERTED = "inserted"  # an entry that does not link to its predecessor
    REORDERED = "reordered"  # entries present but out of order
    BAD_SIGNATURE = "bad_signature"  # signature wrong while content hashes match
    UNKNOWN_KEY = "unknown_key"  # signed with a key id nobody has


@dataclass(frozen=True)
class Finding:
    kind: Problem
    chain_id: str
    seq: int | None
    event_id: str | None
    detail: str


@dataclass
class ChainReport:
    chain_id: str
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str = GENESIS
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [f.seq for f in self.findings if f.seq is not None]
        return min(seqs) if seqs else None


# The payload copies an entry's signature covers, by the hash field that covers each.
CONTENT_HASH = "content_sha256"  # the original payload (cold copy)
HOT_CONTENT_HASH = "hot_content_sha256"  # the masked payload (hot copy, and cold's hot copy)
_COPY_NAMES = {CONTENT_HASH: "payload", HOT_CONTENT_HASH: "hot payload"}

_TEXT_FIELDS = (
    "event_id", "tenant", "event_type", "producer", "correlation_id", "request_id",
    "classification", "route", "payload_sha256", "content_sha256", "hot_content_sha256",
    "chain_id", "prev_hash", "key_id", "signature", "hash",
)  # fmt: skip
_INT_FIELDS = ("occurred_at", "received_at", "seq")


def entry_seq(event: Mapping[str, Any]) -> int | None:
    """The entry's sequence number, or None if it is not an integer (a damaged entry)."""
    seq = event.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def malformed_fields(event: Mapping[str, Any]) -> list[str]:
    """What is missing or of the wrong type among the fields the canonical form and the chain
    link are made of: the processor signs exactly these types, so any other one is damage."""
    get = event.get
    failed = [(name, "text") for name in _TEXT_FIELDS if not isinstance(get(name), str)]
    for name in _INT_FIELDS:
        value = get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            failed.append((name, "an integer"))
    if not isinstance(get("source", False), (str, type(None))):
        failed.append(("source", "text or null"))
    masked = get("masked_fields")
    if not isinstance(masked, (list, tuple)) or not all(isinstance(f, str) for f in masked):
        failed.append(("masked_fields", "a list of text"))
    enrichment = get("enrichment")
    if not isinstance(enrichment, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in enrichment.items()
    ):
        failed.append(("enrichment", "a map of text"))
    return [f"{name} is not {what} ({_shown(event, name)})" for name, what in failed]


def _shown(event: Mapping[str, Any], name: str) -> str:
    if name not in event:
        return "missing"
    value = event[name]
    return f"{type(value).__name__} {value!r:.40}"


def stored_copy_problems(
    event: Mapping[str, Any], stored_copies: Mapping[str, object]
) -> list[tuple[Problem, str]]:
    """Each payload copy exactly as stored against the hash that covers it.

    ``stored_copies`` maps a hash field (``CONTENT_HASH``, ``HOT_CONTENT_HASH``) to the copy as
    the store holds it: the canonical JSON text the processor hashed, so its UTF-8 bytes are
    hashed as they are, never parsed first (text that no longer parses is a mismatch like any
    other edit). A copy that is absent (None) or not text is a problem too.
    """
    problems: list[tuple[Problem, str]] = []
    for name, value in stored_copies.items():
        copy = _COPY_NAMES.get(name, name)
        if isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")  # never raises; never matches if odd
        elif isinstance(value, bytes):
            data = value
        else:
            shown = "missing" if value is None else f"{type(value).__name__}, not text"
            problems.append((Problem.MODIFIED, f"stored {copy} is {shown}"))
            continue
        if hashlib.sha256(data).hexdigest() != event.get(name):
            problems.append((Problem.MODIFIED, f"{copy} does not match {name}"))
    return problems


def check_entry(
    event: Mapping[str, Any],
    keys: HmacKeyring,
    payload: Any | None = None,
    hot_payload: Any | None = None,
    *,
    stored_copies: Mapping[str, object] | None = None,
) -> list[tuple[Problem, str]]:
    """Problems with one entry on its own: payload hashes, signature, entry hash (and, when
    those fail, which fields are missing or of the wrong type).

    ``stored_copies``: the payload copies as stored, hashed byte for byte (see
    ``stored_copy_problems``); what ``verify`` checks. ``payload``/``hot_payload``: payloads a
    caller holds as parsed objects, hashed in canonical form; None = not checked.
    """
    problems: list[tuple[Problem, str]] = []
    if payload is not None and payload_hash(payload) != event.get(CONTENT_HASH):
        problems.append((Problem.MODIFIED, "payload does not match content_sha256"))
    if hot_payload is not None and payload_hash(hot_payload) != event.get(HOT_CONTENT_HASH):
        problems.append((Problem.MODIFIED, "hot payload does not match hot_content_sha256"))
    if stored_copies is not None:
        problems.extend(stored_copy_problems(event, stored_copies))
    error: Exception | None = None
    try:  # tampered bytes can make these anything: a finding, never a crash
        signature, prev = str(event["signature"]), str(event["prev_hash"])
        linked = chain_hash(prev, signature) == event["hash"]
        verdict = keys.verify(str(event["key_id"]), signing_bytes(event), bytes.fromhex(signature))
    except (ValueError, TypeError, KeyError) as exc:
        error, linked, verdict = exc, False, False
    if verdict and linked:
        return problems  # signed as it is: every signed field has the type it was signed with
    wrong = malformed_fields(event)
    if wrong or error is not None:
        problems.append((Problem.MODIFIED, f"malformed signed fields: {'; '.join(wrong) or error}"))
    elif verdict is None:
        problems.append((Problem.UNKNOWN_KEY, f"key id {event['key_id']!r} is unknown"))
    elif not verdict and linked:
        # The signature still matches the chain, so it is the original: a signed field changed.
        problems.append((Problem.MODIFIED, "a signed field changed after signing"))
    elif not verdict:
        problems.append((Problem.BAD_SIGNATURE, "the signature was altered"))
    else:
        problems.append((Problem.MODIFIED, "entry hash does not match prev_hash + signature"))
    return problems


def walk_chain(
    chain_id: str,
    entries: Iterable[Mapping[str, Any]],
    keys: HmacKeyring,
    anchor: ChainHead | None = None,
    payloads: Mapping[str, tuple[Any | None, Any | None]] | None = None,
    stored_copies: Sequence[Mapping[str, object] | None] | None = None,
) -> ChainReport:
    """Verify one chain's entries in stored order.

    ``anchor`` is a trusted earlier head (a signed checkpoint); without it the walk starts at
    the first entry present. ``payloads`` maps event_id to (original, hot) parsed payloads to
    check against their hashes; ``stored_copies[i]``, if given, holds entry i's payload copies
    as stored (see ``check_entry``; None = none to check). An entry whose ``seq`` is not an
    integer is reported and left out of the sequence.
    """
    report = ChainReport(chain_id)
    expected = anchor
    seen: dict[int, str] = {}
    ordered = list(entries)
    copies = list(stored_copies) if stored_copies is not None else [None] * len(ordered)
    if len(copies) != len(ordered):
        raise ValueError("stored_copies must hold one item per entry")
    present = {s for s in map(entry_seq, ordered) if s is not None}
    for entry, stored in zip(ordered, copies, strict=True):
        seq = entry_seq(entry)
        event_id = str(entry.get("event_id"))
        report.checked += 1
        original, hot = (payloads or {}).get(event_id, (None, None))
        for kind, detail in check_entry(entry, keys, original, hot, stored_copies=stored):
            report.findings.append(Finding(kind, chain_id, seq, event_id, detail))
        if seq is None:
            continue  # reported above as a malformed field: it has no place in the chain
        report.first_seq = seq if report.first_seq is None else report.first_seq
        if seq in seen:
            report.findings.append(
                Finding(Problem.INSERTED, chain_id, seq, event_id, f"sequence {seq} appears twice")
            )
        elif expected is not None:
            if seq < expected.seq + 1:
                report.findings.append(
                    Finding(
                        Problem.REORDERED,
                        chain_id,
                        seq,
                        event_id,
                        f"sequence {seq} after {expected.seq}",
                    )
                )
            elif seq > expected.seq + 1:
                # The entries skipped here either come later (reordered) or are gone.
                kind = Problem.REORDERED if expected.seq + 1 in present else Problem.MISSING
                report.findings.append(
                    Finding(
                        kind,
                        chain_id,
                        expected.seq + 1,
                        event_id,
                        f"expected sequence {expected.seq + 1}, found {seq}",
                    )
                )
            elif entry.get("prev_hash") != expected.hash:
                report.findings.append(
                    Finding(
                        Problem.INSERTED,
                        chain_id,
                        seq,
                        event_id,
                        "prev_hash does not link to the previous entry",
                    )
                )
        seen[seq] = str(entry.get("hash"))
        if expected is None or seq > expected.seq:
            expected = ChainHead(seq, str(entry.get("hash")))
        report.last_seq = expected.seq
        report.head = expected.hash
    return report
