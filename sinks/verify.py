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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sealstream.integrity import (
    CONTENT_HASH,
    HOT_CONTENT_HASH,
    ChainHead,
    Problem,
    canonical_json,
    entry_seq,
    walk_chain,
)
from sealstream.keys import HmacKeyring
from sinks.clickhouse.access import quote
from sinks.objects.reader import Selection, iter_cold
from sinks.objects.store import ObjectStore


@dataclass
class Entry:
    """One stored entry. The loaders (``cold_entries``, ``hot_entries``) fill ``stored`` with the
    payload copies as stored, which ``verify`` hashes byte for byte; in-memory callers may give
    parsed ``payload``/``hot_payload`` instead (hashed in canonical form)."""

    record: dict[str, Any]
    store: str  # "hot" or "cold"
    location: str
    order: tuple[int, int]  # (Kafka partition, offset) of events.signed
    payload: Any | None = None  # the original payload, parsed (cold copies)
    hot_payload: Any | None = None  # the masked payload, parsed
    stored: dict[str, object] | None = None  # hash field -> the copy it covers, as stored
    seq: int | None = field(init=False)  # None: not an integer (the walk reports it)
    chain_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.seq = entry_seq(self.record)
        self.chain_id = str(self.record.get("chain_id"))

    @property
    def where(self) -> str:
        """The location with its store named (hot locations already start with it)."""
        prefix = f"{self.store}:"
        return self.location if self.location.startswith(prefix) else prefix + self.location


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


def cold_entry(record: dict[str, Any], location: str, order: tuple[int, int]) -> Entry:
    """A cold record: both payload copies are Avro strings of the record itself."""
    stored = {
        CONTENT_HASH: record.get("payload_json"),
        HOT_CONTENT_HASH: record.get("hot_payload_json"),
    }
    return Entry(record, "cold", location, order, stored=stored)


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
        partition = _integer((content.manifest or {}).get("partition", -1))
        if partition is None:
            partition = -1
            report.findings.append(
                Located(
                    "cold",
                    Problem.MODIFIED.value,
                    None,
                    None,
                    None,
                    content.path,
                    "the manifest's partition is not a number",
                )
            )
        for index, (record, offset) in enumerate(
            zip(content.records, content.offsets, strict=True)
        ):
            entries.append(cold_entry(record, f"{content.path}#{index}", (partition, offset)))
        if progress is not None:
            progress(len(content.records))
    return entries


# The timestamps come back as Unix ms under names of their own: an alias equal to a column
# name would shadow that column in WHERE (ClickHouse resolves aliases there), and the event-day
# filter would compare milliseconds with a date and select every row.
HOT_COLUMNS = (
    "event_id, tenant, event_type, toUnixTimestamp64Milli(occurred_at) AS occurred_ms, "
    "toUnixTimestamp64Milli(received_at) AS received_ms, "
    "toUnixTimestamp64Milli(signed_at) AS signed_ms, producer, correlation_id, request_id, "
    "source, classification, route, payload_sha256, content_sha256, hot_content_sha256, "
    "masked_fields, enrichment, chain_id, seq, prev_hash, hash, key_id, signature, payload, "
    "kafka_topic, kafka_partition, kafka_offset"
)
_RENAMED = {"occurred_ms": "occurred_at", "received_ms": "received_at", "signed_ms": "signed_at"}
_HOT_INTEGERS = (
    "occurred_at", "received_at", "signed_at", "seq", "kafka_partition", "kafka_offset",
)  # fmt: skip


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
    """Hot rows as entries. Values come back in the transport's types (64-bit integers may be
    text) and are converted; a value that does not convert is left as it is, for the checks to
    report, never a crash."""
    entries = []
    for row in rows:
        record = {_RENAMED.get(k, k): v for k, v in row.items()}
        for name in _HOT_INTEGERS:
            number = _integer(record.get(name), text=True)
            if number is not None:
                record[name] = number
        if isinstance(record.get("masked_fields"), list | tuple):
            record["masked_fields"] = list(record["masked_fields"])
        if isinstance(record.get("enrichment"), Mapping):
            record["enrichment"] = dict(record["enrichment"])
        partition, offset = record.get("kafka_partition"), record.get("kafka_offset")
        location = f"hot:events {record.get('kafka_topic')}/{partition}@{offset}"
        order = (
            partition if isinstance(partition, int) else -1,
            offset if isinstance(offset, int) else -1,
        )
        stored: dict[str, object] = {HOT_CONTENT_HASH: record.get("payload")}
        entries.append(Entry(record, "hot", location, order, stored=stored))
    return entries


def _integer(value: Any, text: bool = False) -> int | None:
    """``value`` as an integer if it is one (or, with ``text``, decimal digits), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if text and isinstance(value, str | bytes):
        try:
            return int(value)
        except ValueError:
            return None
    return None


# -- checking -------------------------------------------------------------------------------


def _walk_store(
    store: str,
    mine: list[Entry],
    others: dict[str, dict[int, Entry]],
    keys: HmacKeyring,
    anchors: dict[str, list[ChainHead]],
    complete: bool,
    report: VerifyReport,
    settled_seq: dict[str, int] | None = None,
) -> None:
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
        ordered = _interleave(sorted(entries, key=lambda e: e.order), fillers)
        own = {id(e) for e in entries}
        where = {(e.seq, str(e.record.get("event_id"))): e.location for e in entries}
        where_id = {str(e.record.get("event_id")): e.location for e in entries}
        heads = sorted(anchors.get(chain_id, []), key=lambda h: h.seq)
        first = min((s for s in (e.seq for e in ordered) if s is not None), default=0)
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
                str(e.record.get("event_id")): (e.payload, e.hot_payload)
                for e in ordered
                if id(e) in own
            },
            [e.stored if id(e) in own else None for e in ordered],
        )
        # fillers by position and id: an entry of this store never has a filler's seq
        filler_keys = {(e.seq, str(e.record.get("event_id"))) for e in fillers}
        # the last sequence number both sinks had committed: a gap past it is in flight
        horizon = None if settled_seq is None else settled_seq.get(chain_id)
        for finding in chain.findings:
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
                    store,
                    finding.kind.value,
                    chain_id,
                    finding.seq,
                    finding.event_id,
                    where.get(
                        (finding.seq, str(finding.event_id)),
                        where_id.get(str(finding.event_id), "-"),
                    ),
                    finding.detail,
                )
            )
        by_seq = {e.seq: e for e in ordered if e.seq is not None}
        report.checked[store] += len(entries)
        summary = report.chains.setdefault(f"{store}:{chain_id}", {})
        summary.update(entries=len(entries), first_seq=chain.first_seq, last_seq=chain.last_seq)
        if complete:
            end = chain.last_seq or 0
            beyond = [h for h in heads if h.seq > end]
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
                        store,
                        Problem.MISSING.value,
                        chain_id,
                        end + 1,
                        None,
                        "-",
                        "; ".join(evidence) + f"; the store ends at {end}",
                    )
                )
            for head in heads:  # the other store's entries are checked when it is walked
                stored = by_seq.get(head.seq)
                if stored is None or id(stored) not in own:
                    continue
                if stored.record.get("hash") != head.hash:
                    report.findings.append(
                        Located(
                            store,
                            Problem.MODIFIED.value,
                            chain_id,
                            head.seq,
                            str(stored.record.get("event_id")),
                            stored.location,
                            "entry hash differs from the signed checkpoint",
                        )
                    )
            summary.update(_anchoring(heads, by_seq, anchor))


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


def verify(
    hot: list[Entry] | None,
    cold: list[Entry] | None,
    keys: HmacKeyring,
    anchors: dict[str, list[ChainHead]],
    complete: bool,
    report: VerifyReport,
    settled: dict[int, int] | None = None,
    settled_seq: dict[str, int] | None = None,
) -> VerifyReport:
    """``settled``: per events.signed partition, the offset below which both sinks had
    committed when the stores were read; ``settled_seq``: per chain, the last sequence number
    below it (``settled_seqs``). What lies beyond them may be in one store and not yet in the
    other while the pipeline runs: counted in flight, not reported missing."""

    def index(entries: list[Entry] | None) -> dict[str, dict[int, Entry]]:
        out: dict[str, dict[int, Entry]] = defaultdict(dict)
        for e in entries or []:
            if e.seq is not None:  # one without is a finding of its own store's walk
                out[e.chain_id][e.seq] = e
        return out

    hot_index, cold_index = index(hot), index(cold)
    if hot is not None:
        _walk_store("hot", hot, cold_index, keys, anchors, complete, report, settled_seq)
    if cold is not None:
        _walk_store("cold", cold, hot_index, keys, anchors, complete, report, settled_seq)
    if hot is not None and cold is not None:
        _attribute_shared_holes(report, hot_index, cold_index)
        compare(hot, cold, report, settled)
    _first_bad_seqs(report)
    return report


def _first_bad_seqs(report: VerifyReport) -> None:
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


def settled_seqs(
    kafka: Any, topic: str, settled: dict[int, int], decoder: Any, look_back: int = 200
) -> dict[str, int]:
    """Per chain, the sequence number of the last signed record below ``settled`` (what both
    sinks had committed), read back from ``topic``. A chain whose records there cannot be read
    (expired, or none yet) has no horizon: everything of it is compared."""
    from confluent_kafka import Consumer, TopicPartition

    out: dict[str, int] = {}
    consumer = Consumer(
        kafka.client_config(
            group_id=f"sealstream-verify-{uuid.uuid4().hex}",
            enable_auto_commit=False,
            isolation_level="read_committed",
            enable_partition_eof=True,
        )
    )
    try:
        for partition, end in settled.items():
            if end <= 0:
                continue
            consumer.assign([TopicPartition(topic, partition, max(0, end - look_back))])
            last: tuple[str, int] | None = None
            while True:
                message = consumer.poll(10)
                if message is None or message.error() is not None:
                    break  # end of the partition (an EOF event), or unreadable
                if int(message.offset() or 0) >= end:
                    break
                try:
                    record = decoder.decode(message.value() or b"")[1]
                    last = (str(record["chain_id"]), int(record["seq"]))
                except Exception:  # not a signed record: the stores' business, not ours
                    continue
            if last is not None:
                out[last[0]] = max(out.get(last[0], 0), last[1])
    finally:
        consumer.close()
    return out


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
                        f"sequence {f.seq} is in neither store ({f.detail})",
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
        seq, head_hash = _integer(record.get("seq")), record.get("head_hash")
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
                    "audit.checkpoints",
                    detail,
                )
            )
            continue
        anchors[str(record["chain_id"])].append(ChainHead(seq, head_hash))
        report.checkpoints += 1
    return anchors
