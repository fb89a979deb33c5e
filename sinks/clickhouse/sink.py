"""The ClickHouse sink: signed events, audit decisions, dead letters and checkpoints into the
hot store, one insert per batch, exactly once (sinks/runner.py explains the batches).

Only the masked copy of each payload (``hot_payload_json``) is stored; events routed ``cold``
(restricted data) are not stored hot at all.
"""

from __future__ import annotations

import logging
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DataError
from confluent_kafka import Message

from schemas.serde import Decoder
from sealstream.settings import ClickHouseSettings, SinkSettings
from sinks.clickhouse.parts import MERGE_MARGIN_S, recent_broken_parts
from sinks.clickhouse.rows import (
    CHECKPOINT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DECISION_COLUMNS,
    EVENT_COLUMNS,
    RECEIPT_COLUMNS,
    REPLAY_COLUMNS,
    RowError,
    _decode,
    checkpoint_row,
    dead_letter_row,
    decision_row,
    event_row,
    receipt_row,
    replay_row,
)
from sinks.runner import (
    EVENTS,
    Batch,
    Rejected,
    RestartToRepair,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from sinks.clickhouse.outages import OutageLog

log = logging.getLogger("sealstream.sink.clickhouse")


def _day(columns: list[str], name: str) -> Callable[[list[Any]], str]:
    """A row's partition when its table is PARTITION BY toYYYYMMDD(``name``)."""
    column = columns.index(name)
    return lambda row: row[column].strftime("%Y%m%d")


def _month(columns: list[str], name: str) -> Callable[[list[Any]], str]:
    """A row's partition when its table is PARTITION BY toYYYYMM(``name``)."""
    column = columns.index(name)
    return lambda row: row[column].strftime("%Y%m")


_TENANT, _EVENT_TYPE = EVENT_COLUMNS.index("tenant"), EVENT_COLUMNS.index("event_type")


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
            sink.signed_topic: _Table(
                f"{db}.events",
                EVENT_COLUMNS,
                decoded(event_row),
                _day(EVENT_COLUMNS, "occurred_at"),
            ),
            sink.decisions_topic: _Table(
                f"{db}.audit_decisions",
                DECISION_COLUMNS,
                decoded(decision_row),
                _month(DECISION_COLUMNS, "decided_at"),
            ),
            sink.dlq_topic: _Table(
                f"{db}.dead_letters",
                DEAD_LETTER_COLUMNS,
                dead_letter_row,
                _month(DEAD_LETTER_COLUMNS, "failed_at"),
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
            counts = Counter((r[_TENANT], r[_EVENT_TYPE]) for r in stored)
            for (tenant, event_type), n in counts.items():
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
