"""``sealstream verify``: recompute every signature and walk every hash chain in the hot and the
cold store, anchored to the signed checkpoints, and compare the two stores.

Each store's entries are walked per chain in stored order (Kafka offset of ``events.signed``,
which both sinks keep). Routing leaves legitimate holes: an event routed ``cold`` is not in
ClickHouse. Such a hole is filled, for the walk, by the entry from the other store when that
entry's route excludes this store; anything else missing is reported ``missing``.

Payload copies are hashed exactly as stored (the canonical JSON text the processor hashed),
never parsed first, so an edit that leaves text which is no JSON at all is found like any other.

Chain completeness (``missing``, ``reordered``, checkpoint coverage) is checked on unfiltered
runs only; with ``--since/--until/--tenant/--event-type`` the chains are cut by the filter, so
every entry's payload hashes and signature and the links between consecutive entries are
checked, not the holes. Unfiltered, each chain's summary also says how far it is anchored:
the entries after its last signed checkpoint could be cut off unnoticed, so their count and
the signing time of the first of them are reported (information, not a finding).

Hot against cold, in both kinds of run: per tenant and day a digest of the entries routed to
both; where the digests differ, each such entry one store holds and the other does not is a
``missing`` finding naming the copy that is left.

The parts, one module each: ``sinks/entries.py`` (the entries loaded from each store, and the
report), ``sinks/chains.py`` (the chain walk and the checkpoint anchors), ``sinks/compare.py``
(hot against cold) and ``sinks/settled.py`` (how far both sinks had committed, from Kafka).
Every name is importable from here.
"""

from __future__ import annotations

from collections import defaultdict

from sealstream.integrity import ChainHead
from sealstream.keys import HmacKeyring
from sinks.chains import attribute_shared_holes, checkpoint_anchors, first_bad_seqs, walk_store
from sinks.compare import compare, merkle_root
from sinks.entries import (
    HOT_COLUMNS,
    Entry,
    Located,
    VerifyReport,
    cold_entries,
    cold_entry,
    hot_entries,
    hot_sql,
    read_hot,
)
from sinks.settled import settled_offsets, settled_seqs, sink_dead_letters

__all__ = [
    "HOT_COLUMNS",
    "Entry",
    "Located",
    "VerifyReport",
    "checkpoint_anchors",
    "cold_entries",
    "cold_entry",
    "compare",
    "hot_entries",
    "hot_sql",
    "merkle_root",
    "read_hot",
    "settled_offsets",
    "settled_seqs",
    "sink_dead_letters",
    "verify",
]


def verify(
    hot: list[Entry] | None,
    cold: list[Entry] | None,
    keys: HmacKeyring,
    anchors: dict[str, list[ChainHead]],
    complete: bool,
    report: VerifyReport,
    settled: dict[int, int] | None = None,
    settled_seq: dict[str, int] | None = None,
    dead_letters: dict[tuple[str, int], str] | None = None,
) -> VerifyReport:
    """``settled``: per events.signed partition, the offset below which both sinks had
    committed when the stores were read; ``settled_seq``: per chain, the last sequence number
    below it (``settled_seqs``). What lies beyond them may be in one store and not yet in the
    other while the pipeline runs: counted in flight, not reported missing. ``dead_letters``:
    (chain, seq) of signed records a sink put in its dead letters, and where
    (``sink_dead_letters``): missing there, they are reported as ``dead_lettered``."""

    def index(entries: list[Entry] | None) -> dict[str, dict[int, Entry]]:
        out: dict[str, dict[int, Entry]] = defaultdict(dict)
        for e in entries or []:
            if e.seq is not None:  # one without is a finding of its own store's walk
                out[e.chain_id][e.seq] = e
        return out

    hot_index, cold_index = index(hot), index(cold)
    if hot is not None:
        walk_store("hot", hot, cold_index, keys, anchors, complete, report, settled_seq)
    if cold is not None:
        walk_store("cold", cold, hot_index, keys, anchors, complete, report, settled_seq)
    if hot is not None and cold is not None:
        attribute_shared_holes(report, hot_index, cold_index)
        compare(hot, cold, report, settled)
    if dead_letters:
        _name_dead_letters(report, dead_letters, hot_index if hot is not None else None)
    first_bad_seqs(report)
    return report


def _name_dead_letters(
    report: VerifyReport,
    dead_letters: dict[tuple[str, int], str],
    hot_index: dict[str, dict[int, Entry]] | None = None,
) -> None:
    """A signed event a sink could not store (its dead letters hold it) is not lost, and not
    stored either: say which, and where it is, so an operator can fix and replay it. Each one
    the hot store does not hold is named, whether or not the walks found a hole for it: one
    that is the only entry of its chain, or not the last record of its partition, leaves none
    (a record of a chain the worker did not sign, written to events.signed by someone else,
    once went unreported when the worker's records came after it)."""
    detail = (
        "a sink could not store it and put it in its dead letters; fix the cause and "
        "replay it (sealstream dlq replay)"
    )
    named: list[Located] = []
    for f in report.findings:
        where = (
            dead_letters.get((f.chain_id, f.seq))
            if f.kind == "missing" and f.chain_id is not None and f.seq is not None
            else None
        )
        if where is None:
            named.append(f)
            continue
        located = Located(f.store, "dead_lettered", f.chain_id, f.seq, f.event_id, where, detail)
        named.append(located)
    if hot_index is not None:
        seen = {(f.chain_id, f.seq) for f in named if f.kind == "dead_lettered"}
        for (chain_id, seq), where in sorted(dead_letters.items()):
            if (chain_id, seq) not in seen and seq not in hot_index.get(chain_id, {}):
                named.append(Located("hot", "dead_lettered", chain_id, seq, None, where, detail))
    report.findings = named
