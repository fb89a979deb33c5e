"""Rows a storage outage took from the embedded engine, read back from Kafka and written again.

While the sink process could not write a byte, chDB committed the parts of the insert in
flight as if whole although their files were empty (docs/faults.md): the insert "succeeded",
the runner committed the batch's offsets, and at the restart the engine set the parts aside
with the batch's rows. Writing the batch again is no remedy by itself: the table remembers the
batch's insert token (its deduplication log names the set-aside part) and drops the block. But
Kafka still holds every record the sink committed. So:

1. While the sink runs it keeps in memory when each batch was written; when writes work again
   after an outage that broke a part, it leaves a marker with the batches written around the
   outage before it asks for a restart (sinks/clickhouse/outages.py).
2. At the next start, before the sink consumes, ``repair_at_start`` hands :class:`Restorer` the
   source tables whose set-aside parts nothing covers. It reads those tables' batches back
   from Kafka (``read_committed``), builds their rows as the sink did, looks each row up, and
   inserts the ones the table lacks with a token of their own: the batch's token plus
   ``/recovered`` (``ClickHouseStore.write_again``). The rollups count inserts, so each view
   target that keeps every row gets the partitions those batches reach recomputed from its
   source, after the rows are back, by ``repair_at_start``: a recovered row counts once.
3. No marker (the process died during the outage, when nothing can be written, or the marker
   could not be saved): the window comes from the set-aside part itself. The files of a part an
   insert wrote keep the time they were written; the sink read back every record committed
   from ``LAG_ALLOWANCE_S`` + ``MERGE_MARGIN_S`` before it. A merged part holds rows of any
   age: the whole topic is read.

A pending range (sinks/runner.py) is written first as the runner will rebuild it, with its own
token; only rows still missing then (the token was remembered by a broken part) get a token of
their own, so the runner's rebuild afterwards is a duplicate the table drops either way.

The marker is removed only when the repair is done, and it is rewritten before the first row
goes in (attempt count, the tables written to). A start interrupted on the way does it all
again: rows already back are found and not inserted twice, the views are recomputed again, and
the tokens carry the attempt (``/recovered-2``), so rows a broken recovery insert took are not
taken for written.

What "lost" means per table: the events of ``events`` by event id (a copy at other offsets
counts as the event); every other table by its rows' Kafka coordinates. ``receipts`` and
``dlq_replays`` come from compacted topics: a record compaction removed was superseded by a
newer one of its key, which is restored if it was lost too; the tables keep one row per key.
Records Kafka no longer holds (retention) cannot be restored: the table's parts stay reported
as lost, with the remedy by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import Message

from sealstream.settings import KafkaSettings
from sinks.clickhouse.outages import Marker, Span, load_marker, save_marker
from sinks.clickhouse.parts import (
    MERGE_MARGIN_S,
    Restored,
    SetAside,
    View,
    view_partitions,
    views,
)
from sinks.runner import Batch, parse_pending

if TYPE_CHECKING:
    from sinks.clickhouse.sink import ClickHouseStore

log = logging.getLogger("sealstream.sink.clickhouse")

# how long the sink may have been behind the records' own times when it wrote them (the
# window of a set-aside part without a marker)
LAG_ALLOWANCE_S = 900.0
CHUNK_RECORDS = 20_000  # a long range is read back and inserted in pieces of this many records


class Reader(Protocol):
    """Kafka as the recovery reads it (:class:`KafkaReader`; a fake in the unit tests)."""

    def partitions(self, topic: str) -> list[int]: ...

    def committed(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, str]]:
        """The sink group's committed offset (negative: none) and metadata per partition."""

    def offsets_at(self, topic: str, partitions: list[int], ms: int) -> dict[int, int]:
        """The first offset whose record's time is ``ms`` or later (the end if none)."""

    def earliest(self, topic: str, partitions: list[int]) -> dict[int, int]: ...

    def read(self, topic: str, partition: int, first: int, last: int) -> Iterator[Message]:
        """The committed records of ``first``..``last``, in order."""

    def close(self) -> None: ...


class KafkaReader:
    """The sink's topics read with ``read_committed`` and its group's committed offsets, by a
    consumer that assigns partitions itself: it never joins the group and never commits."""

    def __init__(self, kafka: KafkaSettings, group: str, timeout_s: float = 30.0) -> None:
        from confluent_kafka import Consumer

        self.timeout_s = timeout_s
        self.consumer = Consumer(
            kafka.client_config(
                group_id=group,
                enable_auto_commit=False,
                enable_auto_offset_store=False,
                enable_partition_eof=True,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                client_id=f"{kafka.client_id}-clickhouse-recovery",
            )
        )

    def partitions(self, topic: str) -> list[int]:
        from confluent_kafka import KafkaException

        meta = self.consumer.list_topics(topic, timeout=self.timeout_s).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        return sorted(meta.partitions)

    def committed(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, str]]:
        from confluent_kafka import KafkaException, TopicPartition

        done = self.consumer.committed(
            [TopicPartition(topic, p) for p in partitions], timeout=self.timeout_s
        )
        for tp in done:
            if tp.error is not None:
                raise KafkaException(tp.error)
        return {tp.partition: (tp.offset, getattr(tp, "metadata", None) or "") for tp in done}

    def offsets_at(self, topic: str, partitions: list[int], ms: int) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        found = self.consumer.offsets_for_times(
            [TopicPartition(topic, p, ms) for p in partitions], timeout=self.timeout_s
        )
        out = {}
        for tp in found:
            if tp.offset < 0:  # every record is older: nothing from then on
                tp.offset = self._watermarks(topic, tp.partition)[1]
            out[tp.partition] = tp.offset
        return out

    def earliest(self, topic: str, partitions: list[int]) -> dict[int, int]:
        return {p: self._watermarks(topic, p)[0] for p in partitions}

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        from confluent_kafka import TopicPartition

        low, high = self.consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=self.timeout_s
        )
        return int(low), int(high)

    def read(self, topic: str, partition: int, first: int, last: int) -> Iterator[Message]:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        self.consumer.assign([TopicPartition(topic, partition, first)])
        try:
            idle_until = time.monotonic() + self.timeout_s
            while True:
                messages = self.consumer.consume(num_messages=1000, timeout=1.0)
                if messages:
                    idle_until = time.monotonic() + self.timeout_s
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return
                        raise KafkaException(error)
                    if int(message.offset() or 0) > last:
                        return
                    yield message
                    if int(message.offset() or 0) >= last:
                        return
                if not messages:  # the range may end in transaction markers
                    position = self.consumer.position([TopicPartition(topic, partition)])
                    if position[0].offset > last:
                        return
                    if time.monotonic() > idle_until:
                        raise TimeoutError(
                            f"reading {topic}[{partition}] {first}..{last}: nothing for "
                            f"{self.timeout_s:.0f} s"
                        )
        finally:
            self.consumer.unassign()

    def close(self) -> None:
        self.consumer.close()


def written_at(part: SetAside) -> float | None:
    """When the files of a set-aside part were written (the engine renames the directory when
    it sets the part aside; its files keep their times)."""
    try:
        return max(f.stat().st_mtime for f in Path(part.path).iterdir())
    except (OSError, ValueError):  # gone, unreadable or empty
        return None


class Restorer:
    """``repair_at_start``'s ``restore``: rows of source tables read back from Kafka."""

    def __init__(
        self,
        store: ClickHouseStore,
        reader: Callable[[], Reader],
        path: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.path = path
        self.clock = clock
        # what it writes counts as written: an outage right after puts it in the next marker
        self.written = store.outage_log.written if store.outage_log is not None else None
        self._open_reader = reader
        self._reader: Reader | None = None
        self._table_topics = {t.name.split(".", 1)[1]: topic for topic, t in store.tables.items()}

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            self._reader = self._open_reader()
        return self._reader

    def __call__(self, lost: dict[str, list[SetAside]]) -> Restored:
        marker = load_marker(self.path)
        todo = {t: parts for t, parts in lost.items() if t in self._table_topics}
        restored = Restored()
        if not todo and not (marker is not None and marker.inserted):
            return restored
        marker = marker or Marker(reason="broken parts set aside at start, no outage marker")
        attempt = marker.attempts + 1
        suffix = "recovered" if attempt == 1 else f"recovered-{attempt}"
        spans: dict[str, list[Span]] = {}
        for table, parts in todo.items():
            topic = self._table_topics[table]
            spans[topic] = self._spans(topic, parts, marker)
        for table in marker.inserted:  # an earlier start wrote rows: recompute its views
            topic = self._table_topics[table]
            spans.setdefault(topic, self._committed(topic, marker.spans))
        journal = Marker(
            marker.since,
            marker.window_start,
            marker.reason,
            sorted(set(marker.spans) | {s for ss in spans.values() for s in ss if not s.pending}),
            attempt,
            list(marker.inserted),
        )
        written = {table: 0 for table in self._table_topics}
        whole: set[str] = set()
        for topic, topic_spans in sorted(spans.items()):
            table = self.store.tables[topic].name.split(".", 1)[1]
            complete = self._unreadable(topic, topic_spans) == 0
            for group in self._groups(self._batches(topic, topic_spans)):
                for batch, missing in zip(group, self._missing(group), strict=True):
                    if not missing:
                        continue
                    if table not in journal.inserted or not self.path.exists():
                        journal.inserted = sorted({*journal.inserted, table})
                        save_marker(self.path, journal)  # before the rows: see the module doc
                    written[table] += len(self.store.write_again(batch, missing, suffix))
                    if self.written is not None:
                        self.written(batch)
            log.info("%s: %d rows read back from Kafka written again (%d spans of %s)",
                     table, written[table], len(topic_spans), topic)  # fmt: skip
            if complete and table in journal.inserted:
                whole.add(table)
            if table in journal.inserted:
                self._views_to_recompute(table, topic, topic_spans, restored)
        for table in sorted(whole & set(todo)):
            restored.tables[table] = f"{written[table]} rows read back from Kafka" + (
                " (after an earlier start that was interrupted)" if attempt > 1 else ""
            )
        return restored

    def finish(self) -> None:
        """The repair is done: the marker goes."""
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- which records -----------------------------------------------------------------------

    def _spans(self, topic: str, parts: list[SetAside], marker: Marker) -> list[Span]:
        """The records whose rows ``parts`` may have held: the marker's batches of ``topic``,
        else (or for parts older than its window) a window of their own; plus the pending
        ranges."""
        found = [s for s in marker.spans if s.topic == topic]
        start = marker.window_start
        alone = [
            p
            for p in parts
            if not (
                start is not None and p.low == p.high and (written_at(p) or 0.0) >= start and found
            )
        ]
        partitions = self.reader.partitions(topic)
        if alone:
            times = [written_at(p) for p in alone]
            if all(at is not None and p.low == p.high for p, at in zip(alone, times, strict=True)):
                since = min(at for at in times if at is not None)
                ms = int((since - MERGE_MARGIN_S - LAG_ALLOWANCE_S) * 1000)
                firsts = self.reader.offsets_at(topic, partitions, ms)
                how = f"from {ms} ms"
            else:  # a merged part holds rows of any age
                firsts = self.reader.earliest(topic, partitions)
                how = "whole"
            log.warning("no outage marker for broken part(s) %s: reading %s back %s",
                        [p.name for p in alone], topic, how)  # fmt: skip
            committed = self.reader.committed(topic, partitions)
            for p in partitions:
                end = committed[p][0]
                if end > firsts[p]:
                    found.append(Span(topic, p, firsts[p], end - 1))
        return self._committed(topic, found, partitions)

    def _committed(
        self, topic: str, spans: list[Span], partitions: list[int] | None = None
    ) -> list[Span]:
        """The spans of ``topic`` cut to what the group committed, and the group's pending
        ranges (the runner rebuilds them, so they are written as it will write them)."""
        partitions = partitions if partitions is not None else self.reader.partitions(topic)
        committed = self.reader.committed(topic, partitions)
        cut = []
        for p in partitions:
            end, metadata = committed.get(p, (-1, ""))
            pending = parse_pending(metadata)
            if pending is not None and end >= 0:
                cut.append(Span(topic, p, pending[0], pending[1], pending=True))
            for s in spans:
                if (s.topic, s.partition) == (topic, p) and end >= 0 and s.first < end:
                    cut.append(Span(topic, p, s.first, min(s.last, end - 1)))
        return sorted(set(cut))

    def _unreadable(self, topic: str, spans: list[Span]) -> int:
        """How many offsets of ``spans`` Kafka no longer holds (retention deleted them)."""
        partitions = sorted({s.partition for s in spans})
        low = self.reader.earliest(topic, partitions) if partitions else {}
        gone = sum(max(0, min(s.last + 1, low[s.partition]) - s.first) for s in spans)
        if gone:
            log.error("%d records of %s the sink committed are no longer in Kafka "
                      "(retention): their rows cannot be read back", gone, topic)  # fmt: skip
        return gone

    def _batches(self, topic: str, spans: list[Span]) -> Iterator[tuple[Span, Batch]]:
        """The records of ``spans`` (sorted, each partition read once), a batch per span or
        per CHUNK_RECORDS of a long one; a pending range comes first and whole."""
        by_partition: dict[int, list[Span]] = {}
        for span in sorted(spans, key=lambda s: (s.partition, not s.pending, s.first)):
            by_partition.setdefault(span.partition, []).append(span)
        for partition, group in by_partition.items():
            for pending in [s for s in group if s.pending]:
                batch = Batch(topic, partition)
                for message in self.reader.read(topic, partition, pending.first, pending.last):
                    batch.add(message)
                if batch.records:
                    yield pending, batch
            ranges = [s for s in group if not s.pending]
            if not ranges:
                continue
            i, batch = 0, Batch(topic, partition)
            first, last = ranges[0].first, max(s.last for s in ranges)
            for message in self.reader.read(topic, partition, first, last):
                offset = int(message.offset() or 0)
                while i < len(ranges) and offset > ranges[i].last:
                    if batch.records:
                        yield ranges[i], batch
                    i, batch = i + 1, Batch(topic, partition)
                if i == len(ranges):
                    break
                if offset < ranges[i].first:
                    continue
                batch.add(message)
                if len(batch.records) >= CHUNK_RECORDS:
                    yield ranges[i], batch
                    batch = Batch(topic, partition)
            if i < len(ranges) and batch.records:
                yield ranges[i], batch

    # -- which rows ---------------------------------------------------------------------------

    def _groups(self, batches: Iterator[tuple[Span, Batch]]) -> Iterator[list[Batch]]:
        """Consecutive batches of one partition, up to CHUNK_RECORDS records, to look up at
        once; a pending range is written (as the runner will write it) before it is looked
        up."""
        group: list[Batch] = []
        size = 0
        for span, batch in batches:
            if group and (group[0].partition != batch.partition or size >= CHUNK_RECORDS):
                yield group
                group, size = [], 0
            if span.pending:  # exactly what the runner will rebuild, with its token
                self.store.write(batch)
            group.append(batch)
            size += len(batch.records)
        if group:
            yield group

    def _missing(self, batches: list[Batch]) -> list[list[tuple[Message, list[Any]]]]:
        """The rows of each of ``batches`` (one partition) that the table does not hold;
        events past the hot retention are not looked for (the TTL removes them)."""
        from sinks.clickhouse.rows import EVENT_COLUMNS

        built = [self.store.rows(batch)[:2] for batch in batches]
        everything = [row for _, rows in built for row in rows]
        if not everything:
            return [[] for _ in batches]
        table = built[0][0]
        if table.columns is EVENT_COLUMNS:  # the event by its id, at any offsets
            oldest = self.clock() - self.store.settings.hot_retention_days * 86400
            held = {
                str(i)
                for (i,) in self.store.client.query(
                    f"SELECT DISTINCT event_id FROM {table.name} WHERE event_id IN "
                    "{ids:Array(String)} AND toYYYYMMDD(occurred_at) IN {days:Array(UInt32)}",
                    parameters={
                        "ids": sorted({str(r[0]) for _, r in everything}),
                        "days": sorted({int(r[3].strftime("%Y%m%d")) for _, r in everything}),
                    },
                ).result_rows
            }
            return [
                [(m, r) for m, r in rows if str(r[0]) not in held and r[3].timestamp() >= oldest]
                for _, rows in built
            ]
        offsets = {  # any other row by its Kafka coordinates
            int(o)
            for (o,) in self.store.client.query(
                f"SELECT kafka_offset FROM {table.name} WHERE kafka_topic = {{t:String}} "
                "AND kafka_partition = {p:UInt32} AND kafka_offset BETWEEN {a:UInt64} "
                "AND {b:UInt64}",
                parameters={
                    "t": batches[0].topic,
                    "p": batches[0].partition,
                    "a": min(b.first for b in batches),
                    "b": max(b.last for b in batches),
                },
            ).result_rows
        }
        return [
            [(m, r) for m, r in rows if int(m.offset() or 0) not in offsets] for _, rows in built
        ]

    def _views_to_recompute(
        self, table: str, topic: str, spans: list[Span], restored: Restored
    ) -> None:
        """The partitions of the views over ``table`` that keep every row (the rollups) and
        that rows of ``spans`` reach: recomputed after the rows are back, so each counts once
        (a view's own part of the lost insert may have survived it)."""
        from clickhouse_connect.driver.binding import format_query_value

        reach: dict[int, tuple[int, int]] = {}
        for s in spans:
            low, high = reach.get(s.partition, (s.first, s.last))
            reach[s.partition] = (min(low, s.first), max(high, s.last))
        where = f"kafka_topic = {format_query_value(topic)} AND (" + " OR ".join(
            f"(kafka_partition = {p} AND kafka_offset BETWEEN {a} AND {b})"
            for p, (a, b) in sorted(reach.items())
        ) + ")"  # fmt: skip
        database = self.store.settings.database
        over: list[View] = [
            v for v in views(self.store.client, database) if v.source == table and v.counts
        ]
        for view in over:
            partitions = view_partitions(self.store.client, database, view, where)
            if partitions is None:  # cannot tell which: every partition it has
                partitions = {
                    str(p)
                    for (p,) in self.store.client.query(
                        "SELECT DISTINCT partition_id FROM system.parts WHERE active "
                        "AND database = {db:String} AND table = {t:String}",
                        parameters={"db": database, "t": view.target},
                    ).result_rows
                }
            restored.partitions.setdefault(view.target, set()).update(partitions)
