"""The chain walk of ``sealstream verify``: each store's entries walked per chain in stored
order, anchored to the signed checkpoints (``checkpoint_anchors``), with the holes the routing
explains filled from the other store; see ``sinks/verify.py`` for what is checked when.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sealstream.integrity import ChainHead, Finding, Problem, canonical_json, walk_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import TopicSettings
from sinks.entries import Entry, Located, VerifyReport, integer


@dataclass
class _StoreChain:
    """One chain of one store as it is walked: its own entries, in stored order, with the
    other store's entries that fill the holes the routing explains, and its signed
    checkpoints."""

    store: str
    chain_id: str
    entries: list[Entry]  # this store's own
    fillers: list[Entry]
    heads: list[ChainHead]  # by sequence number
    horizon: int | None  # the last sequence number both sinks had committed
    ordered: list[Entry] = field(init=False)
    own: set[int] = field(init=False)  # ids of this store's own entries

    def __post_init__(self) -> None:
        self.ordered = _interleave(sorted(self.entries, key=lambda e: e.order), self.fillers)
        self.own = {id(e) for e in self.entries}


def walk_store(
    store: str,
    mine: list[Entry],
    others: dict[str, dict[int, Entry]],
    keys: HmacKeyring,
    anchors: dict[str, list[ChainHead]],
    complete: bool,
    report: VerifyReport,
    settled_seq: dict[str, int] | None = None,
) -> None:
    """Walk every chain of ``store`` (its entries ``mine``; ``others``: the other store's by
    chain and sequence number) into ``report``."""
    elsewhere = "cold" if store == "hot" else "hot"  # the route of entries not meant for here
    by_chain: dict[str, list[Entry]] = defaultdict(list)
    for entry in mine:
        by_chain[entry.chain_id].append(entry)
    if complete:  # a chain with signed checkpoints or committed records, nothing stored here
        for chain_id in [*anchors, *(settled_seq or {})]:
            by_chain.setdefault(chain_id, [])
    for chain_id, entries in sorted(by_chain.items()):
        present = {e.seq for e in entries}
        # holes the routing explains: the other store's entries routed to it alone (a route
        # that is missing or unknown explains nothing)
        fillers = [
            e
            for seq, e in others.get(chain_id, {}).items()
            if seq not in present and e.record.get("route") == elsewhere
        ]
        heads = sorted(anchors.get(chain_id, []), key=lambda h: h.seq)
        horizon = None if settled_seq is None else settled_seq.get(chain_id)
        chain = _StoreChain(store, chain_id, entries, fillers, heads, horizon)
        _walk_chain(chain, keys, complete, report)


def _walk_chain(
    chain: _StoreChain, keys: HmacKeyring, complete: bool, report: VerifyReport
) -> None:
    """Walk one chain of one store, from its anchor when unfiltered, into ``report``."""
    ordered, own = chain.ordered, chain.own
    first = min((s for s in (e.seq for e in ordered) if s is not None), default=0)
    # Unfiltered, a chain is walked from its last signed checkpoint before the first stored
    # entry, or from its genesis: deleting a chain's first entries is a gap like any other.
    # (After retention removed old entries, verify with --since.)
    earlier = [h for h in chain.heads if h.seq < first]
    anchor = (earlier[-1] if earlier else ChainHead()) if complete else None
    walked = walk_chain(
        chain.chain_id,
        [e.record for e in ordered],
        keys,
        anchor,
        {
            str(e.record.get("event_id")): (e.payload, e.hot_payload)
            for e in ordered
            if id(e) in own
        },
        [e.stored if id(e) in own else None for e in ordered],
    )
    _report_walk(chain, walked.findings, complete, report)
    by_seq = {e.seq: e for e in ordered if e.seq is not None}
    report.checked[chain.store] += len(chain.entries)
    summary = report.chains.setdefault(f"{chain.store}:{chain.chain_id}", {})
    summary.update(entries=len(chain.entries), first_seq=walked.first_seq, last_seq=walked.last_seq)
    if complete:
        _check_tail(chain, walked.last_seq or 0, report)
        _check_checkpoints(chain, by_seq, report)
        summary.update(_anchoring(chain.heads, by_seq, anchor))


def _report_walk(
    chain: _StoreChain, findings: list[Finding], complete: bool, report: VerifyReport
) -> None:
    """The walk's findings that are this store's, located at this store's copy."""
    where = {(e.seq, str(e.record.get("event_id"))): e.location for e in chain.entries}
    where_id = {str(e.record.get("event_id")): e.location for e in chain.entries}
    # fillers by position and id: an entry of this store never has a filler's seq
    filler_keys = {(e.seq, str(e.record.get("event_id"))) for e in chain.fillers}
    # the last sequence number both sinks had committed: a gap past it is in flight
    horizon = chain.horizon
    for finding in findings:
        if (finding.seq, finding.event_id) in filler_keys and finding.kind != Problem.MISSING:
            continue  # the other store's own problems are reported when it is walked
        if not complete and finding.kind in (Problem.MISSING, Problem.REORDERED):
            continue
        if (
            finding.kind == Problem.MISSING
            and horizon is not None
            and finding.seq is not None
            and finding.seq > horizon
        ):
            report.in_flight += 1
            continue
        report.findings.append(
            Located(
                chain.store,
                finding.kind.value,
                chain.chain_id,
                finding.seq,
                finding.event_id,
                where.get(
                    (finding.seq, str(finding.event_id)),
                    where_id.get(str(finding.event_id), "-"),
                ),
                finding.detail,
            )
        )


def _check_tail(chain: _StoreChain, end: int, report: VerifyReport) -> None:
    """Entries cut off the chain's end (``end``: the last sequence number stored): missing if
    a signed checkpoint covers more, or both sinks had committed more."""
    horizon = chain.horizon
    beyond = [h for h in chain.heads if h.seq > end]
    if horizon is not None and beyond and beyond[-1].seq > horizon:
        # checkpointed, but past what the sinks had committed: in flight, unless an
        # entry the sinks did commit is gone as well
        report.in_flight += 1
        beyond = [h for h in beyond if h.seq <= horizon]
    evidence = []
    if horizon is not None and horizon > end:  # Kafka still has what they committed
        evidence.append(f"both sinks committed its entries up to sequence {horizon}")
    if beyond:
        evidence.append(f"a signed checkpoint covers sequence {beyond[-1].seq}")
    if evidence:
        report.findings.append(
            Located(
                chain.store,
                Problem.MISSING.value,
                chain.chain_id,
                end + 1,
                None,
                "-",
                "; ".join(evidence) + f"; the store ends at {end}",
            )
        )


def _check_checkpoints(chain: _StoreChain, by_seq: dict[int, Entry], report: VerifyReport) -> None:
    """Each of this store's entries at a signed checkpoint has the hash the checkpoint signed."""
    for head in chain.heads:  # the other store's entries are checked when it is walked
        stored = by_seq.get(head.seq)
        if stored is None or id(stored) not in chain.own:
            continue
        if stored.record.get("hash") != head.hash:
            report.findings.append(
                Located(
                    chain.store,
                    Problem.MODIFIED.value,
                    chain.chain_id,
                    head.seq,
                    str(stored.record.get("event_id")),
                    stored.location,
                    "entry hash differs from the signed checkpoint",
                )
            )


def _anchoring(
    heads: list[ChainHead], by_seq: dict[int, Entry], start: ChainHead | None
) -> dict[str, Any]:
    """How far a chain is anchored: its last signed checkpoint that the stored entries match,
    and the entries after it (nothing proves those are all there: cutting them off leaves a
    valid chain), with the signing time of the first of them."""
    verified = [
        h.seq
        for h in heads
        if (e := by_seq.get(h.seq)) is not None and e.record.get("hash") == h.hash
    ]
    # the walk's start (a checkpoint before the first stored entry) counts if the entry links
    if start is not None and start.seq > 0:
        after_start = by_seq.get(start.seq + 1)
        if after_start is not None and after_start.record.get("prev_hash") == start.hash:
            verified.append(start.seq)
    checkpoint = max(verified, default=None)
    tail = sorted(seq for seq in by_seq if seq > (checkpoint or 0))
    return {
        "checkpoint_seq": checkpoint,
        "after_checkpoint": len(tail),
        "unanchored_since": _utc(by_seq[tail[0]].record.get("signed_at")) if tail else None,
    }


def _utc(ms: Any) -> str | None:
    """Unix ms as an RFC 3339 UTC time, or None if it is not a time."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        return None
    try:
        when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    except (OverflowError, ValueError, OSError):
        return None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _interleave(own: list[Entry], fillers: list[Entry]) -> list[Entry]:
    """Own entries in stored order, each filler placed by its sequence number (fillers only
    link the chain; where the other store keeps them is that store's business)."""
    fill = sorted(fillers, key=lambda e: e.seq or 0)
    out: list[Entry] = []
    i = 0
    for entry in own:
        seq = entry.seq
        while seq is not None and i < len(fill) and (fill[i].seq or 0) < seq:
            out.append(fill[i])
            i += 1
        out.append(entry)
    return out + fill[i:]


def attribute_shared_holes(
    report: VerifyReport, hot: dict[str, dict[int, Entry]], cold: dict[str, dict[int, Entry]]
) -> None:
    """A sequence number neither store holds is one loss, reported once as ``hot+cold``
    (which store should have had it is unknowable: its route went with it)."""
    kept: list[Located] = []
    shared: set[tuple[str | None, int | None]] = set()
    for f in report.findings:
        if (
            f.kind == Problem.MISSING.value
            and f.store in ("hot", "cold")
            and f.chain_id is not None
            and f.seq is not None
            and f.seq not in hot.get(f.chain_id, {})
            and f.seq not in cold.get(f.chain_id, {})
        ):
            if (f.chain_id, f.seq) not in shared:
                shared.add((f.chain_id, f.seq))
                kept.append(
                    Located(
                        "hot+cold",
                        f.kind,
                        f.chain_id,
                        f.seq,
                        None,
                        "-",
                        f"sequence {f.seq} is in neither store ({f.detail})",
                    )
                )
            continue
        kept.append(f)
    report.findings = kept


def first_bad_seqs(report: VerifyReport) -> None:
    """Each chain summary's first sequence number with a finding (``hot+cold`` counts for
    both stores)."""
    first: dict[tuple[str, str], int] = {}
    for f in report.findings:
        if f.chain_id is None or f.seq is None:
            continue
        for store in f.store.split("+"):
            key = (store, f.chain_id)
            first[key] = min(first.get(key, f.seq), f.seq)
    for name, summary in report.chains.items():
        store, _, chain_id = name.partition(":")
        summary["first_bad_seq"] = first.get((store, chain_id))


def checkpoint_anchors(
    records: Iterable[dict[str, Any]], keys: HmacKeyring, report: VerifyReport
) -> dict[str, list[ChainHead]]:
    """Signed checkpoints by chain; a checkpoint whose signature fails is a finding, not an
    anchor."""
    anchors: dict[str, list[ChainHead]] = defaultdict(list)
    for record in records:
        seq, head_hash = integer(record.get("seq")), record.get("head_hash")
        try:
            body = {k: record[k] for k in ("chain_id", "seq", "head_hash", "created_at", "key_id")}
            verdict = keys.verify(
                str(record["key_id"]), canonical_json(body), bytes.fromhex(str(record["signature"]))
            )
        except (KeyError, TypeError, ValueError):
            verdict = False  # malformed: a bad signature
        if not verdict or seq is None or not isinstance(head_hash, str):
            kind, detail = Problem.MODIFIED, "a signed checkpoint with a malformed seq or head"
            if not verdict:
                kind = Problem.UNKNOWN_KEY if verdict is None else Problem.BAD_SIGNATURE
                detail = "checkpoint signature does not verify"
            report.findings.append(
                Located(
                    "checkpoints",
                    kind.value,
                    str(record.get("chain_id")),
                    seq,
                    None,
                    TopicSettings().checkpoints,
                    detail,
                )
            )
            continue
        anchors[str(record["chain_id"])].append(ChainHead(seq, head_hash))
        report.checkpoints += 1
    return anchors
