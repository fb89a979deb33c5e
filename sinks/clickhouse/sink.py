"""The ClickHouse sink: signed events, audit decisions, dead letters and checkpoints into the
hot store, one insert per batch, exactly once (sinks/runner.py explains the batches).

Only the masked copy of each payload (``hot_payload_json``) is stored; events routed ``cold``
(restricted data) are not stored hot at all.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DataError
from confluent_kafka import Message

from schemas.serde import Decoder, UnknownSchemaError, WireFormatError
from sealstream.deadletters import DeadLetterHeaders
from sealstream.settings import ClickHouseSettings, SinkSettings
from sinks.clickhouse.parts import MERGE_MARGIN_S, recent_broken_parts
from sinks.runner import (
    EVENTS,
    Batch,
    Rejected,
    RestartToRepair,
    StoreUnavailable,
    message_headers,
)

if TYPE_CHECKING:
    from sinks.clickhouse.outages import OutageLog

log = logging.getLogger("sealstream.sink.clickhouse")

UTC = dt.UTC

EVENT_COLUMNS = [
    "event_id", "tenant", "event_type", "occurred_at", "received_at", "signed_at", "producer",
    "correlation_id", "request_id", "source", "classification", "route", "payload",
    "masked_fields", "payload_sha256", "content_sha256", "hot_content_sha256", "enrichment",
    "schema_id", "source_topic", "source_partition", "source_offset", "chain_id", "seq",
    "prev_hash", "hash", "key_id", "signature", "kafka_topic", "kafka_partition",
    "kafka_offset", "bytes",
]  # fmt: skip
DECISION_COLUMNS = [
    "decided_at", "subject", "tenant", "event_tenant", "event_type", "action", "decision",
    "reason_code", "policy_version", "request_id", "correlation_id", "client_ip", "user_agent",
    "detail", "kafka_topic", "kafka_partition", "kafka_offset",
]  # fmt: skip
DEAD_LETTER_COLUMNS = [
    "failed_at", "reason", "stage", "error_class", "message", "tenant", "event_type",
    "source_topic", "source_partition", "source_offset", "attempts", "bytes", "kafka_topic",
    "kafka_partition", "kafka_offset", "event_id",
]  # fmt: skip
REPLAY_COLUMNS = [
    "marker", "status", "replay_id", "by", "at", "event_id", "target", "kafka_topic",
    "kafka_partition", "kafka_offset",
]  # fmt: skip
RECEIPT_COLUMNS = [
    "event_id",
    "tenant",
    "receipt",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
]
CHECKPOINT_COLUMNS = [
    "chain_id", "seq", "head_hash", "created_at", "key_id", "signature", "kafka_topic",
    "kafka_partition", "kafka_offset",
]  # fmt: skip


class RowError(ValueError):
    """A record that cannot become a row; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# DateTime64's range: a time outside it cannot be stored (the row goes to the dead letters)
_EARLIEST = dt.datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = dt.datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC)


def _ms(value: Any) -> dt.datetime:
    try:
        if isinstance(value, dt.datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        else:
            moment = dt.datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (OverflowError, OSError) as exc:
        raise RowError("unconvertible", f"time {value!r} is out of range") from exc
    if not _EARLIEST <= moment <= _LATEST:
        raise RowError("unconvertible", f"time {moment.isoformat()} is outside 1900..2299")
    return moment


def _coords(message: Message) -> list[Any]:
    return [message.topic() or "", int(message.partition() or 0), int(message.offset() or 0)]


def _decode(decoder: Decoder, message: Message) -> dict[str, Any]:
    try:
        return decoder.decode(message.value() or b"")[1]
    except UnknownSchemaError as exc:
        raise RowError("unknown_schema", str(exc)) from exc
    except WireFormatError as exc:
        raise RowError("undecodable", str(exc)) from exc


def event_row(record: dict[str, Any], message: Message) -> list[Any] | None:
    """The ``events`` row of a signed event; None for events routed to cold storage only."""
    if record["route"] == "cold":
        return None
    return [
        str(record["event_id"]),
        str(record["tenant"]),
        str(record["event_type"]),
        _ms(record["occurred_at"]),
        _ms(record["received_at"]),
        _ms(record["signed_at"]),
        str(record["producer"]),
        str(record["correlation_id"]),
        str(record["request_id"]),
        record.get("source"),
        str(record["classification"]),
        str(record["route"]),
        str(record["hot_payload_json"]),
        [str(f) for f in record["masked_fields"]],
        str(record["payload_sha256"]),
        str(record["content_sha256"]),
        str(record["hot_content_sha256"]),
        {str(k): str(v) for k, v in record["enrichment"].items()},
        int(record["schema_id"]),
        str(record["source_topic"]),
        int(record["source_partition"]),
        int(record["source_offset"]),
        str(record["chain_id"]),
        int(record["seq"]),
        str(record["prev_hash"]),
        str(record["hash"]),
        str(record["key_id"]),
        str(record["signature"]),
        *_coords(message),
        len(message.value() or b""),
    ]


def decision_row(record: dict[str, Any], message: Message) -> list[Any]:
    return [
        _ms(record["decided_at"]),
        str(record["subject"]),
        str(record["tenant"]),
        str(record["event_tenant"]),
        str(record.get("event_type") or ""),
        str(record["action"]),
        str(record["decision"]),
        str(record["reason_code"]),
        str(record["policy_version"]),
        str(record["request_id"]),
        str(record["correlation_id"]),
        record.get("client_ip"),
        record.get("user_agent"),
        record.get("detail"),
        *_coords(message),
    ]


def dead_letter_row(message: Message) -> list[Any]:
    """A dead letter's row, from its error headers (its value may be undecodable)."""
    h = {k: v.decode("utf-8", "replace") for k, v in message_headers(message).items()}
    error = DeadLetterHeaders.from_headers(h)
    _, timestamp_ms = message.timestamp()
    return [
        _ms(error.last_failure_ms or timestamp_ms or 0),
        error.reason,
        error.stage,
        error.error_class,
        error.message,
        h.get("tenant", ""),
        h.get("event_type", ""),
        error.topic,
        error.partition,
        error.offset,
        error.attempts,
        len(message.value() or b""),
        *_coords(message),
        h.get("event_id", ""),  # set by the gateway on raw events; absent on poison
    ]


def replay_row(message: Message) -> list[Any] | None:
    """A dead-letter replay/purge marker (JSON on the compacted ``dlq.replays`` topic, keyed by
    the dead letter's coordinates; streams/dlq.py writes them)."""
    value, key = message.value(), message.key()
    if not value or not key:
        return None
    try:
        marker = json.loads(value)
        row = [
            key.decode(),
            str(marker["status"]),
            str(marker.get("replay_id") or ""),
            str(marker.get("by") or ""),
            _ms(int(marker["at_ms"])),
            str(marker.get("event_id") or ""),
            marker.get("target"),
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise RowError("unconvertible", f"replay marker is not the expected JSON: {exc}") from exc
    return [*row, *_coords(message)]


def receipt_row(message: Message) -> list[Any] | None:
    """A gateway receipt (JSON on the compacted ``receipts`` topic); tombstones are skipped."""
    value = message.value()
    if not value:
        return None
    try:
        receipt = json.loads(value)
        event_id, tenant = str(receipt["event_id"]), str(receipt["tenant"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RowError(
            "unconvertible", f"receipt is not JSON with event_id and tenant: {exc}"
        ) from exc
    return [event_id, tenant, value.decode(), *_coords(message)]


def checkpoint_row(record: dict[str, Any], message: Message) -> list[Any]:
    return [
        str(record["chain_id"]),
        int(record["seq"]),
        str(record["head_hash"]),
        _ms(record["created_at"]),
        str(record["key_id"]),
        str(record["signature"]),
        *_coords(message),
    ]


def _day(column: int) -> Callable[[list[Any]], str]:
    return lambda row: row[column].strftime("%Y%m%d")


def _month(column: int) -> Callable[[list[Any]], str]:
    return lambda row: row[column].strftime("%Y%m")


class _Table:
    """A target table: its columns, how a record becomes a row, and the row's partition (as
    the table's ``PARTITION BY`` computes it; None for unpartitioned tables)."""

    def __init__(
        self,
        name: str,
        columns: list[str],
        row: Callable[[Message], list[Any] | None],
        partition: Callable[[list[Any]], str] | None = None,
    ) -> None:
        self.name, self.columns, self.row, self.partition = name, columns, row, partition


# A batch is inserted in blocks of at most this many partitions: ClickHouse refuses an insert
# block that spans more than max_partitions_per_insert_block (100 by default), and a batch
# whose events occurred on 120 days once stalled the sink for every tenant.
PARTITIONS_PER_INSERT = 50
# ClickHouse errors that say "this data", not "this server": a block failing with one of
# these is split until the rows it cannot take are found (and dead-lettered), instead of being
# retried for ever.
DATA_ERRORS = {
    6,  # CANNOT_PARSE_TEXT
    27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  # ATTEMPT_TO_READ_AFTER_EOF
    33,  # CANNOT_READ_ALL_DATA
    41,  # CANNOT_PARSE_DATETIME
    53,  # TYPE_MISMATCH
    69,  # ARGUMENT_OUT_OF_BOUND
    70,  # CANNOT_CONVERT_TYPE
    72,  # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    252,  # TOO_MANY_PARTS (per insert block)
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    407,  # DECIMAL_OVERFLOW
}
_CODE_RE = re.compile(r"Code:\s*(\d+)")


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = _CODE_RE.search(str(exc))
    return int(found.group(1)) if found else None


class _Unwritable(Exception):
    """One block's rows were refused for what they hold."""


def insert_token(group: str, topic_id: str, batch: Batch) -> str:
    """Deterministic per batch: the same pending range always yields the same token.

    The topic id (Kafka's UUID) keeps a re-created topic, whose offsets start again at 0,
    from matching tokens of the old one still in the window."""
    return f"{group}/{batch.topic}@{topic_id}/{batch.partition}/{batch.first}-{batch.last}"


class ClickHouseStore:
    """Write batches into ClickHouse tables chosen by source topic."""

    name = "clickhouse"

    def __init__(
        self,
        client: Client,
        settings: ClickHouseSettings,
        sink: SinkSettings,
        decoder: Decoder,
        group: str,
        topic_ids: dict[str, str],
        on_stored: Callable[[str, list[list[Any]]], None] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.sink = sink
        self.decoder = decoder
        self.group = group
        self.topic_ids = topic_ids
        # called with (table, rows) after ClickHouse accepted them: the audit trail's index
        self.on_stored = on_stored
        self._merges_stopped = False
        # ClickHouse 26 added ``deduplicate_insert`` ('enable' by default), which overrides
        # ``insert_deduplicate``; older servers reject the name. Set whichever exist.
        self.dedup_settings = {
            str(name)
            for (name,) in client.query(
                "SELECT name FROM system.settings WHERE name IN "
                "('deduplicate_insert', 'insert_deduplicate')"
            ).result_rows
        }
        db = settings.database

        def decoded(convert: Callable[[dict[str, Any], Message], Any]) -> Callable[[Message], Any]:
            return lambda m: convert(_decode(decoder, m), m)

        self.tables = {
            sink.signed_topic: _Table(f"{db}.events", EVENT_COLUMNS, decoded(event_row), _day(3)),
            sink.decisions_topic: _Table(
                f"{db}.audit_decisions", DECISION_COLUMNS, decoded(decision_row), _month(0)
            ),
            sink.dlq_topic: _Table(
                f"{db}.dead_letters", DEAD_LETTER_COLUMNS, dead_letter_row, _month(0)
            ),
            sink.checkpoints_topic: _Table(
                f"{db}.checkpoints", CHECKPOINT_COLUMNS, decoded(checkpoint_row)
            ),
            sink.receipts_topic: _Table(f"{db}.receipts", RECEIPT_COLUMNS, receipt_row),
            sink.replays_topic: _Table(f"{db}.dlq_replays", REPLAY_COLUMNS, replay_row),
        }

    @property
    def topics(self) -> list[str]:
        return list(self.tables)

    def rows(self, batch: Batch) -> tuple[_Table, list[tuple[Message, list[Any]]], list[Rejected]]:
        table = self.tables[batch.topic]
        rows: list[tuple[Message, list[Any]]] = []
        rejected: list[Rejected] = []
        for message in batch.records:
            try:
                row = table.row(message)
            except RowError as exc:
                rejected.append(Rejected(message, exc.reason, str(exc)))
                continue
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                rejected.append(Rejected(message, "unconvertible", f"{type(exc).__name__}: {exc}"))
                continue
            if row is not None:
                rows.append((message, row))
        return table, rows, rejected

    def write(self, batch: Batch) -> list[Rejected]:
        table, rows, rejected = self.rows(batch)
        if not rows:
            return rejected
        stored = self._insert_blocks(table, rows, self._token(batch), rejected)
        if table.columns is EVENT_COLUMNS:
            for (tenant, event_type), n in Counter((r[1], r[2]) for r in stored).items():
                EVENTS.labels(self.name, tenant, event_type).inc(n)
        return rejected

    def _token(self, batch: Batch) -> str:
        return insert_token(self.group, self.topic_ids.get(batch.topic, ""), batch)

    def _insert_blocks(
        self,
        table: _Table,
        rows: list[tuple[Message, list[Any]]],
        token: str,
        rejected: list[Rejected],
    ) -> list[list[Any]]:
        """Insert ``rows`` in blocks of at most PARTITIONS_PER_INSERT partitions; the rows
        stored (those of blocks the store took), passed on to the audit index."""
        stored: list[list[Any]] = []
        for label, block in _blocks(table, rows):
            # the same batch always splits the same way: every block's token is deterministic
            block_token = token if label is None else f"{token}/{label}"
            stored += self._insert(table, block, block_token, rejected)
        if stored and self.on_stored is not None:
            self.on_stored(table.name.split(".", 1)[1], stored)
        return stored

    def _insert(
        self,
        table: _Table,
        block: list[tuple[Message, list[Any]]],
        token: str,
        rejected: list[Rejected],
    ) -> list[list[Any]]:
        """Insert ``block``; rows it cannot take for their content are found by halving the
        block (each half with a token of its own) and go to ``rejected``. Returns the rows
        stored."""
        try:
            self._insert_rows(table, [row for _, row in block], token)
            return [row for _, row in block]
        except _Unwritable as exc:
            if len(block) == 1:
                log.warning("row refused by %s for good: %s", table.name, exc)
                rejected.append(Rejected(block[0][0], "unwritable", str(exc)[:1000]))
                return []
        half = len(block) // 2
        return self._insert(table, block[:half], f"{token}/a", rejected) + self._insert(
            table, block[half:], f"{token}/b", rejected
        )

    def _insert_rows(self, table: _Table, rows: list[list[Any]], token: str) -> None:
        settings: dict[str, Any] = {"deduplicate_blocks_in_dependent_materialized_views": 1}
        on = self.sink.deduplicate  # off only in the tests' negative control
        if "insert_deduplicate" in self.dedup_settings:
            settings["insert_deduplicate"] = int(on)
        if "deduplicate_insert" in self.dedup_settings:
            settings["deduplicate_insert"] = "enable" if on else "disable"
        if on:
            settings["insert_deduplication_token"] = token
        try:
            self.client.insert(table.name, rows, column_names=table.columns, settings=settings)
        except (DataError, ValueError, TypeError, OverflowError, struct.error) as exc:
            # the client could not serialize a value (DataError is clickhouse-connect's own
            # word for it): the data, never the server
            cause = exc.__cause__ or exc
            raise _Unwritable(f"{type(cause).__name__}: {cause}") from exc
        except (ClickHouseError, OSError) as exc:
            if isinstance(exc, ClickHouseError) and _error_code(exc) in DATA_ERRORS:
                raise _Unwritable(str(exc).split("(version")[0].strip()) from exc
            self._stop_merges()
            raise StoreUnavailable(f"insert into {table.name} failed: {exc}") from exc

    # When each recent batch was written, and the marker an outage leaves for the next start
    # to read back what broken parts took (sinks/clickhouse/outages.py); set by the service.
    outage_log: OutageLog | None = None

    def _stop_merges(self) -> None:
        """Embedded engine, storage failing: start no merge that could commit a broken part
        (the fault suite saw two: a rollup's and audit_decisions'). An in-memory switch, so
        it works while nothing can be written; merges resume in ``after_outage``. The outage
        log keeps every batch from now on: one just written may have left a broken part."""
        if not self.settings.embedded:
            return
        if self.outage_log is not None:
            self.outage_log.began()
        if self._merges_stopped:
            return
        try:
            self.client.command("SYSTEM STOP MERGES")
            self._merges_stopped = True
            log.warning("storage failing: background merges stopped until it recovers")
        except (ClickHouseError, OSError) as exc:
            log.warning("could not stop merges: %s", exc)

    def after_outage(self, since: float) -> None:
        """Embedded engine: a part written during the outage may be broken (see
        sinks/clickhouse/parts.py); if one is, stop so that a fresh start sets it aside,
        leaving the marker that makes it read back the batches written around the outage
        (sinks/clickhouse/recover.py)."""
        if not self.settings.embedded:
            return  # a server checks its own storage; this sink's outage was the network
        try:
            self._check_after_outage(since)
        except RestartToRepair as exc:
            self._leave_outage_marker(since, str(exc))
            raise
        finally:
            if self.outage_log is not None:
                self.outage_log.ended()

    def _check_after_outage(self, since: float) -> None:
        if self._merges_stopped:
            try:
                self.client.command("SYSTEM START MERGES")
            except (ClickHouseError, OSError) as exc:  # a fresh start has merges on
                raise RestartToRepair(f"merges could not be started again: {exc}") from exc
            self._merges_stopped = False
        # from the margin before the first refused write, or before the last write ahead of
        # it: the insert in flight when the storage failed, if nothing was written for a while
        start = (
            since - MERGE_MARGIN_S
            if self.outage_log is None
            else self.outage_log.window_start(since)
        )
        try:
            broken = recent_broken_parts(self.client, self.settings.database, start)
        except (ClickHouseError, OSError) as exc:  # cannot tell: a fresh start checks them all
            raise RestartToRepair(f"checking the parts written during the outage: {exc}") from exc
        if broken:
            raise RestartToRepair(
                "broken part(s) written during the outage: "
                + "; ".join(f"{b.table} {b.part}: {b.message[:200]}" for b in broken)
            )
        log.info("parts written during the outage checked: none broken")

    def _leave_outage_marker(self, since: float, reason: str) -> None:
        """Writes work again (the runner calls ``after_outage`` after a write succeeded), so
        the marker can be saved now; if it cannot, the next start goes by the set-aside parts'
        own times (sinks/clickhouse/recover.py)."""
        if self.outage_log is None:
            return
        try:
            marker = self.outage_log.leave_marker(since, reason)
        except OSError as exc:
            log.error("could not save the outage marker %s: %s", self.outage_log.path, exc)
            return
        log.warning(
            "outage marker %s lists %d batches: the next start reads those of a table a "
            "broken part took rows from back from Kafka",
            self.outage_log.path,
            len(marker.spans),
        )

    def write_again(
        self, batch: Batch, rows: list[tuple[Message, list[Any]]], suffix: str
    ) -> list[list[Any]]:
        """Insert ``rows`` of ``batch`` again: rows a broken part took from the table after
        the sink had committed the batch (sinks/clickhouse/recover.py). The table remembers
        the batch's token and would drop the block, so the rows go in with a token of their
        own, the batch's plus ``/<suffix>``, split into blocks as ``write`` splits them."""
        table = self.tables[batch.topic]
        return self._insert_blocks(table, rows, f"{self._token(batch)}/{suffix}", [])

    def close(self) -> None:
        self.client.close()


def _blocks(
    table: _Table, rows: list[tuple[Message, list[Any]]]
) -> Iterator[tuple[str | None, list[tuple[Message, list[Any]]]]]:
    """The batch's rows in blocks of at most PARTITIONS_PER_INSERT partitions, in batch order
    within each; one block labelled None when it fits whole (the usual case)."""
    if table.partition is None:
        yield None, rows
        return
    by_partition: dict[str, list[tuple[Message, list[Any]]]] = {}
    for item in rows:
        by_partition.setdefault(table.partition(item[1]), []).append(item)
    if len(by_partition) <= PARTITIONS_PER_INSERT:
        yield None, rows
        return
    keys = sorted(by_partition)
    for start in range(0, len(keys), PARTITIONS_PER_INSERT):
        chunk = keys[start : start + PARTITIONS_PER_INSERT]
        yield f"p{chunk[0]}-{chunk[-1]}", [item for k in chunk for item in by_partition[k]]


def topic_ids(bootstrap_config: dict[str, Any], topics: list[str]) -> dict[str, str]:
    """Kafka topic UUIDs by name ('' where the broker does not say)."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(bootstrap_config)
    ids: dict[str, str] = {}
    for name, future in admin.describe_topics(TopicCollection(topics)).items():
        try:
            ids[name] = str(future.result(timeout=30).topic_id)
        except Exception as exc:  # a missing topic: the consumer waits for it
            log.warning("no topic id for %s: %s", name, exc)
            ids[name] = ""
    return ids
