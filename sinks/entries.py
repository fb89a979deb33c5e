"""What ``sealstream verify`` checks and what it reports: the stored entries, loaded from the
cold store (Avro files) and the hot store (rows of ``events``), and the report of its findings.

See ``sinks/verify.py`` for how the entries are checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sealstream.integrity import CONTENT_HASH, HOT_CONTENT_HASH, Problem, entry_seq
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
        partition = integer((content.manifest or {}).get("partition", -1))
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
            number = integer(record.get(name), text=True)
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


def integer(value: Any, text: bool = False) -> int | None:
    """``value`` as an integer if it is one (or, with ``text``, decimal digits), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if text and isinstance(value, str | bytes):
        try:
            return int(value)
        except ValueError:
            return None
    return None
