"""``sealstream verify``: recompute every signature and walk every hash chain in the hot and the
cold store, anchored to the signed checkpoints, and compare the two stores.

Each store's entries are walked per chain in stored order (Kafka offset of ``events.signed``,
which both sinks keep). Routing leaves legitimate holes: an event routed ``cold`` is not in
ClickHouse. Such a hole is filled, for the walk, by the entry from the other store when that
entry's route excludes this store; anything else missing is reported ``missing``.

Chain completeness (``missing``, ``reordered``, checkpoint coverage) is checked on unfiltered
runs only; with ``--since/--until/--tenant/--event-type`` the chains are cut by the filter, so
every entry's payload hashes and signature and the links between consecutive entries are
checked, not the holes.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sealstream.integrity import ChainHead, Problem, canonical_json, walk_chain
from sealstream.keys import HmacKeyring
from sinks.clickhouse.access import quote
from sinks.objects.reader import Selection, iter_cold
from sinks.objects.store import ObjectStore

HOT_ROUTES = ("hot", "both")
COLD_ROUTES = ("cold", "both")


@dataclass
class Entry:
    record: dict[str, Any]
    store: str  # "hot" or "cold"
    location: str
    order: tuple[int, int]  # (Kafka partition, offset) of events.signed
    payload: Any | None = None  # the original payload (cold copies)
    hot_payload: Any | None = None


@dataclass(frozen=True)
class Located:
    store: str
    kind: str
    chain_id: str | None
    seq: int | None
    event_id: str | None
    location: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class VerifyReport:
    checked: dict[str, int] = field(default_factory=lambda: {"hot": 0, "cold": 0})
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Located] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: int = 0
    in_flight: int = 0  # entries above what both sinks had committed: not compared

    @property
    def ok(self) -> bool:
        return not self.findings and not self.drift

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for finding in self.findings:
            counts[f"{finding.store}:{finding.kind}"] += 1
        return dict(counts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "checkpoints": self.checkpoints,
            "by_kind": self.by_kind(),
            "chains": self.chains,
            "findings": [f.as_dict() for f in self.findings],
            "drift": self.drift,
            "in_flight": self.in_flight,
        }


# -- loading --------------------------------------------------------------------------------


def cold_entries(
    store: ObjectStore,
    prefix: str,
    selection: Selection,
    report: VerifyReport,
    progress: Callable[[int], None] | None = None,
) -> list[Entry]:
    entries: list[Entry] = []
    for content in iter_cold(store, prefix, selection):
        for kind, detail in content.problems:
            report.findings.append(
                Located("cold", kind.value, None, None, None, content.path, detail)
            )
        partition = int((content.manifest or {}).get("partition", -1))
        for index, (record, offset) in enumerate(
            zip(content.records, content.offsets, strict=True)
        ):
            try:
                payload = json.loads(record["payload_json"])
                hot = json.loads(record["hot_payload_json"])
            except (ValueError, KeyError):
                payload = hot = None
            entries.append(
                Entry(record, "cold", f"{content.path}#{index}", (partition, offset), payload, hot)
            )
        if progress is not None:
            progress(len(content.records))
    return entries


# The timestamps come back as Unix ms under names of their own: an alias equal to a column
# name would shadow that column in WHERE (ClickHouse resolves aliases there), and the event-day
# filter would compare milliseconds with a date and select every row.
HOT_COLUMNS = (
    "event_id, tenant, event_type, toUnixTimestamp64Milli(occurred_at) AS occurred_ms, "
    "toUnixTimestamp64Milli(received_at) AS received_ms, producer, correlation_id, request_id, "
    "source, classification, route, payload_sha256, content_sha256, hot_content_sha256, "
    "masked_fields, enrichment, chain_id, seq, prev_hash, hash, key_id, signature, payload, "
    "kafka_topic, kafka_partition, kafka_offset"
)
_RENAMED = {"occurred_ms": "occurred_at", "received_ms": "received_at"}


def hot_sql(selection: Selection, after: tuple[int, int] | None = None, limit: int = 50_000) -> str:
    """One page of hot rows in (partition, offset) order; ``{db}.`` marks the table."""
    where = []
    if after is not None:
        where.append(f"(kafka_partition, kafka_offset) > ({after[0]}, {after[1]})")
    # the event's UTC day, exactly as the cold store names its date= directories
    if selection.since is not None:
        where.append(f"toDate(occurred_at, 'UTC') >= toDate('{selection.since.isoformat()}')")
    if selection.until is not None:
        where.append(f"toDate(occurred_at, 'UTC') <= toDate('{selection.until.isoformat()}')")
    if selection.tenant is not None:
        where.append("tenant = " + quote(selection.tenant))
    if selection.event_type is not None:
        where.append("event_type = " + quote(selection.event_type))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return (
        f"SELECT {HOT_COLUMNS} FROM {{db}}.events{clause} "
        f"ORDER BY kafka_partition, kafka_offset LIMIT {limit}"
    )


def read_hot(
    reader: Callable[[str], list[dict[str, Any]]],
    selection: Selection,
    progress: Callable[[int], None] | None = None,
    page: int = 50_000,
) -> list[dict[str, Any]]:
    """Every hot row of ``selection``, paged by (partition, offset)."""
    rows: list[dict[str, Any]] = []
    after: tuple[int, int] | None = None
    while True:
        chunk = reader(hot_sql(selection, after, page))
        rows.extend(chunk)
        if progress is not None:
            progress(len(chunk))
        if len(chunk) < page:
            return rows
        after = (int(chunk[-1]["kafka_partition"]), int(chunk[-1]["kafka_offset"]))


def hot_entries(rows: Iterable[dict[str, Any]]) -> list[Entry]:
    entries = []
    for row in rows:
        record = {_RENAMED.get(k, k): v for k, v in row.items()}
        for name in ("occurred_at", "received_at", "seq", "kafka_partition", "kafka_offset"):
            record[name] = int(record[name])
        record["masked_fields"] = list(record["masked_fields"])
        record["enrichment"] = dict(record["enrichment"])
        try:
            hot_payload = json.loads(record["payload"])
        except ValueError:
            hot_payload = None
        coords = f"{record['kafka_topic']}/{record['kafka_partition']}@{record['kafka_offset']}"
        location = f"hot:events {coords}"
        entries.append(
            Entry(
                record,
                "hot",
                location,
                (record["kafka_partition"], record["kafka_offset"]),
                None,
                hot_payload,
            )
        )
    return entries


# -- checking -------------------------------------------------------------------------------


def _walk_store(
    store: str,
    mine: list[Entry],
    others: dict[str, dict[int, Entry]],
    keys: HmacKeyring,
    anchors: dict[str, list[ChainHead]],
    complete: bool,
    report: VerifyReport,
) -> None:
    accepted = HOT_ROUTES if store == "hot" else COLD_ROUTES
    by_chain: dict[str, list[Entry]] = defaultdict(list)
    for entry in mine:
        by_chain[str(entry.record.get("chain_id"))].append(entry)
    for chain_id, entries in sorted(by_chain.items()):
        present = {int(e.record["seq"]) for e in entries}
        # holes the routing explains: the other store's entries not meant for this store
        fillers = [
            e
            for seq, e in others.get(chain_id, {}).items()
            if seq not in present and e.record.get("route") not in accepted
        ]
        ordered = _interleave(sorted(entries, key=lambda e: e.order), fillers)
        own = {id(e) for e in entries}
        where = {str(e.record.get("event_id")): e.location for e in entries}
        heads = sorted(anchors.get(chain_id, []), key=lambda h: h.seq)
        first = min((int(e.record["seq"]) for e in ordered), default=0)
        # Unfiltered, a chain is walked from its last signed checkpoint before the first stored
        # entry, or from its genesis: deleting a chain's first entries is a gap like any other.
        # (After retention removed old entries, verify with --since.)
        earlier = [h for h in heads if h.seq < first]
        anchor = (earlier[-1] if earlier else ChainHead()) if complete else None
        chain = walk_chain(
            chain_id,
            [e.record for e in ordered],
            keys,
            anchor,
            {
                str(e.record["event_id"]): (e.payload, e.hot_payload)
                for e in ordered
                if id(e) in own
            },
        )
        filler_ids = {str(e.record.get("event_id")) for e in fillers}
        for finding in chain.findings:
            if finding.event_id in filler_ids and finding.kind != Problem.MISSING:
                continue  # the other store's own problems are reported when it is walked
            if not complete and finding.kind in (Problem.MISSING, Problem.REORDERED):
                continue
            report.findings.append(
                Located(
                    store,
                    finding.kind.value,
                    chain_id,
                    finding.seq,
                    finding.event_id,
                    where.get(str(finding.event_id), "-"),
                    finding.detail,
                )
            )
        by_seq = {int(e.record["seq"]): e for e in ordered}
        if complete:
            for head in heads:
                stored = by_seq.get(head.seq)
                if stored is None and chain.last_seq is not None and head.seq > chain.last_seq:
                    report.findings.append(
                        Located(
                            store,
                            Problem.MISSING.value,
                            chain_id,
                            (chain.last_seq or 0) + 1,
                            None,
                            "-",
                            f"a signed checkpoint covers sequence {head.seq}; the store ends "
                            f"at {chain.last_seq}",
                        )
                    )
                elif stored is not None and stored.record["hash"] != head.hash:
                    report.findings.append(
                        Located(
                            store,
                            Problem.MODIFIED.value,
                            chain_id,
                            head.seq,
                            str(entry.record.get("event_id")),
                            entry.location,
                            "entry hash differs from the signed checkpoint",
                        )
                    )
        report.checked[store] += len(entries)
        summary = report.chains.setdefault(f"{store}:{chain_id}", {})
        bad = [f.seq for f in report.findings if f.store == store and f.chain_id == chain_id]
        summary.update(
            entries=len(entries),
            first_seq=chain.first_seq,
            last_seq=chain.last_seq,
            first_bad_seq=min((s for s in bad if s is not None), default=None),
        )


def _interleave(own: list[Entry], fillers: list[Entry]) -> list[Entry]:
    """Own entries in stored order, each filler placed by its sequence number (fillers only
    link the chain; where the other store keeps them is that store's business)."""
    fill = sorted(fillers, key=lambda e: int(e.record["seq"]))
    out: list[Entry] = []
    i = 0
    for entry in own:
        while i < len(fill) and int(fill[i].record["seq"]) < int(entry.record["seq"]):
            out.append(fill[i])
            i += 1
        out.append(entry)
    return out + fill[i:]


def compare(
    hot: list[Entry],
    cold: list[Entry],
    report: VerifyReport,
    settled: dict[int, int] | None = None,
) -> None:
    """Per (tenant, day): counts and a digest of the entry hashes of events meant for both.

    ``settled`` (events.signed partition -> offset) is where both sinks had committed before
    the stores were read: entries at or above it may be in one store and not yet in the other
    while the pipeline runs, so they are counted as in flight, not compared."""

    def digests(entries: list[Entry]) -> dict[tuple[str, str], tuple[int, str]]:
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for e in entries:
            if e.record.get("route") != "both":
                continue
            if settled is not None and int(e.order[1]) >= settled.get(int(e.order[0]), 0):
                report.in_flight += 1
                continue
            day = _day(int(e.record["occurred_at"]))
            groups[(str(e.record["tenant"]), day)].append(str(e.record["hash"]))
        return {k: (len(v), merkle_root(sorted(v))) for k, v in groups.items()}

    hot_d, cold_d = digests(hot), digests(cold)
    for key in sorted(set(hot_d) | set(cold_d)):
        h, c = hot_d.get(key, (0, "")), cold_d.get(key, (0, ""))
        if h != c:
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


def _day(ms: int) -> str:
    import datetime as dt

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


def verify(
    hot: list[Entry] | None,
    cold: list[Entry] | None,
    keys: HmacKeyring,
    anchors: dict[str, list[ChainHead]],
    complete: bool,
    report: VerifyReport,
    settled: dict[int, int] | None = None,
) -> VerifyReport:
    def index(entries: list[Entry] | None) -> dict[str, dict[int, Entry]]:
        out: dict[str, dict[int, Entry]] = defaultdict(dict)
        for e in entries or []:
            out[str(e.record.get("chain_id"))][int(e.record["seq"])] = e
        return out

    if hot is not None:
        _walk_store("hot", hot, index(cold), keys, anchors, complete, report)
    if cold is not None:
        _walk_store("cold", cold, index(hot), keys, anchors, complete, report)
    if hot is not None and cold is not None:
        _attribute_shared_holes(report, index(hot), index(cold))
        compare(hot, cold, report, settled)
    return report


def settled_offsets(kafka: Any, sink: Any) -> dict[int, int] | None:
    """Per partition of the signed topic, the offset below which both sinks have committed
    (stored) everything; None if Kafka cannot say (then everything is compared)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(kafka.client_config())
        meta = admin.list_topics(sink.signed_topic, timeout=10).topics[sink.signed_topic]
        if meta.error is not None:
            return None
        tps = [TopicPartition(sink.signed_topic, p) for p in meta.partitions]
        settled: dict[int, int] = {}
        for group in (sink.clickhouse_group, sink.objects_group):
            request = [ConsumerGroupTopicPartitions(group, tps)]
            result = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
            for tp in result.topic_partitions:
                done = max(0, tp.offset)  # no commit yet (-1001): nothing settled
                settled[tp.partition] = min(settled.get(tp.partition, done), done)
        return settled
    except Exception:  # an unreachable broker: compare everything, as offline
        return None


def _attribute_shared_holes(
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
                        f"sequence {f.seq} is in neither store",
                    )
                )
            continue
        kept.append(f)
    report.findings = kept


def checkpoint_anchors(
    records: Iterable[dict[str, Any]], keys: HmacKeyring, report: VerifyReport
) -> dict[str, list[ChainHead]]:
    """Signed checkpoints by chain; a checkpoint whose signature fails is a finding, not an
    anchor."""
    anchors: dict[str, list[ChainHead]] = defaultdict(list)
    for record in records:
        body = {k: record[k] for k in ("chain_id", "seq", "head_hash", "created_at", "key_id")}
        try:
            bytes.fromhex(str(record["signature"]))
        except ValueError:
            record = {**record, "signature": ""}  # malformed: fails below as a bad signature
        verdict = keys.verify(
            str(record["key_id"]), canonical_json(body), bytes.fromhex(str(record["signature"]))
        )
        if not verdict:
            kind = Problem.UNKNOWN_KEY if verdict is None else Problem.BAD_SIGNATURE
            report.findings.append(
                Located(
                    "checkpoints",
                    kind.value,
                    str(record["chain_id"]),
                    int(record["seq"]),
                    None,
                    "audit.checkpoints",
                    "checkpoint signature does not verify",
                )
            )
            continue
        anchors[str(record["chain_id"])].append(
            ChainHead(int(record["seq"]), str(record["head_hash"]))
        )
        report.checkpoints += 1
    return anchors
