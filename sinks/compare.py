"""Hot against cold for ``sealstream verify``: per tenant and day, a digest (a Merkle root of
the entry hashes) of the entries routed to both stores; where the digests differ, each such
entry one store holds and the other does not is a ``missing`` finding naming the copy left.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import replace
from typing import Any

from sealstream.integrity import Problem
from sinks.entries import Entry, Located, VerifyReport


def compare(
    hot: list[Entry],
    cold: list[Entry],
    report: VerifyReport,
    settled: dict[int, int] | None = None,
) -> None:
    """Per (tenant, day): counts and a digest of the entry hashes of events meant for both;
    where they differ, each of those entries one store holds and the other does not at all is
    a ``missing`` finding of the store without it, located at the copy that is left.

    ``settled`` (events.signed partition -> offset) is where both sinks had committed before
    the stores were read: entries at or above it may be in one store and not yet in the other
    while the pipeline runs, so they are counted as in flight, not compared."""

    def groups(entries: list[Entry]) -> dict[tuple[str, str], list[Entry]]:
        out: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        for e in entries:
            if e.record.get("route") != "both":
                continue
            if settled is not None and e.order[1] >= settled.get(e.order[0], 0):
                report.in_flight += 1
                continue
            out[(str(e.record.get("tenant")), _day(e.record.get("occurred_at")))].append(e)
        return out

    def digest(entries: list[Entry]) -> tuple[int, str]:
        if not entries:
            return 0, ""
        return len(entries), merkle_root(sorted(str(e.record.get("hash")) for e in entries))

    # every position each store holds, whatever its route, day or horizon: an entry edited
    # into another group, or past the horizon, is still there (its edit is found by the walk)
    held = {
        "hot": {(e.chain_id, e.seq) for e in hot},
        "cold": {(e.chain_id, e.seq) for e in cold},
    }
    holes = {
        (f.store, f.chain_id, f.seq): i
        for i, f in enumerate(report.findings)
        if f.kind == Problem.MISSING.value
    }
    hot_g, cold_g = groups(hot), groups(cold)
    for key in sorted(set(hot_g) | set(cold_g)):
        h, c = digest(hot_g.get(key, [])), digest(cold_g.get(key, []))
        if h == c:
            continue
        report.drift.append(
            {
                "tenant": key[0],
                "day": key[1],
                "hot": h[0],
                "cold": c[0],
                "hot_root": h[1],
                "cold_root": c[1],
            }
        )
        for entries, absent in ((hot_g.get(key, []), "cold"), (cold_g.get(key, []), "hot")):
            for e in entries:
                if e.seq is not None and (e.chain_id, e.seq) not in held[absent]:
                    _one_store_only(report, holes, e, absent)


def _one_store_only(
    report: VerifyReport,
    holes: dict[tuple[str, str | None, int | None], int],
    entry: Entry,
    absent: str,
) -> None:
    finding = Located(
        absent,
        Problem.MISSING.value,
        entry.chain_id,
        entry.seq,
        str(entry.record.get("event_id")),
        entry.where,
        f"routed to both stores, held by {entry.store} only",
    )
    at = holes.get((absent, entry.chain_id, entry.seq))
    if at is None:
        report.findings.append(finding)
    else:  # the chain walk saw this hole too: one finding, with both details
        seen = report.findings[at]
        report.findings[at] = replace(finding, detail=f"{finding.detail}; {seen.detail}")


def _day(ms: Any) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "invalid-time"
    try:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date().isoformat()
    except (OverflowError, ValueError, OSError):
        return "invalid-time"


def merkle_root(leaves: list[str]) -> str:
    """Binary SHA-256 Merkle root over hex leaves (the last node of an odd level is promoted).
    A leaf that is not hex (a damaged record: reported as a finding of its own) counts as the
    SHA-256 of its text, so the digest still differs from the other side's."""
    level = [_leaf(leaf) for leaf in leaves]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = [
            hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def _leaf(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return hashlib.sha256(text.encode("utf-8", "replace")).digest()
