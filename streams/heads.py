"""Where a chain really stands, and where its input must resume, read from Kafka itself.

faust's table is the working copy of the chain heads, but after a partition moves between
workers its recovered value can lag behind what the previous owner had already committed (seen
in the kill tests as two events signed with the same sequence number). The output topic cannot
lag or lead: a signed record and the input offset it consumed are committed in one transaction.
So when a worker starts processing a partition it reads that partition's last committed signed
record (read_committed) and continues from it, whatever the table says.

The input side has the same problem the other way round: after a worker restart, faust's
consumer was seen (fault suite) to hand the agent a partition's first event *after* the
group's committed offset, so the events in between would have been skipped without a trace.
``resume_offset`` is where the input must continue (the group's committed offset, or the
partition's first offset if the group never committed one) and ``read_range`` reads the
events of a gap, so the agent can process them in order before going on.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from schemas.serde import Decoder
from sealstream.integrity import ChainHead
from sealstream.settings import KafkaSettings


@dataclass(frozen=True)
class CommittedHead:
    head: ChainHead
    source_offset: int


@dataclass(frozen=True)
class RawRecord:
    """One input record read outside faust (a gap being filled)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _reader(kafka: KafkaSettings, group_id: str | None = None) -> Consumer:
    return Consumer(
        kafka.client_config(
            group_id=group_id or f"sealstream-heads-{uuid.uuid4()}",
            isolation_level="read_committed",
            enable_auto_commit=False,
            client_id="sealstream-worker-heads",
        )
    )


def _read(
    consumer: Consumer,
    tp: TopicPartition,
    start: int,
    end: int,
    timeout_s: float,
    idle_s: float | None = None,
) -> list[Any]:
    """The committed records of ``tp`` in ``[start, end)``. Stops at ``end`` or when the
    consumer's position reaches it (transaction markers are never returned, so waiting for the
    offset ``end - 1`` itself could wait forever), or after ``idle_s`` without a record."""
    records: list[Any] = []
    if start >= end:
        return records
    consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
    deadline = time.monotonic() + timeout_s
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            if (msg.offset() or 0) >= end:
                return records
            records.append(msg)
            if (msg.offset() or 0) >= end - 1:
                return records
            idle_since = time.monotonic()
            continue
        position = consumer.position([TopicPartition(tp.topic, tp.partition)])[0].offset
        if position >= end:
            return records
        if idle_s is not None and time.monotonic() - idle_since > idle_s:
            return records
    raise TimeoutError(f"reading {tp.topic}[{tp.partition}] {start}..{end} took over {timeout_s} s")


def last_committed(
    kafka: KafkaSettings, topic: str, partition: int, decoder: Decoder, timeout_s: float = 30.0
) -> CommittedHead | None:
    consumer = _reader(kafka)
    try:
        tp = TopicPartition(topic, partition)
        # the high watermark (a consumer's get_watermark_offsets returns it whatever the
        # isolation level): an open transaction at the end stops the read at the last stable
        # offset instead, after idle_s without a record
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        window = 64
        while True:
            start = max(low, high - window)
            records = _read(consumer, tp, start, high, timeout_s, idle_s=1.0)
            values = [m.value() for m in records if m.value()]
            if values:
                _, record = decoder.decode(values[-1])
                return CommittedHead(
                    ChainHead(int(record["seq"]), str(record["hash"])),
                    int(record["source_offset"]),
                )
            if start == low:
                return None
            window *= 4
    finally:
        consumer.close()


def resume_offset(
    kafka: KafkaSettings, group: str, topic: str, partition: int, timeout_s: float = 30.0
) -> int:
    """The offset ``group`` must process next on ``topic[partition]``: its committed offset
    (a stable one: librdkafka waits out pending transactional commits), else the partition's
    first offset."""
    consumer = _reader(kafka, group_id=group)
    try:
        tp = TopicPartition(topic, partition)
        committed = consumer.committed([tp], timeout=timeout_s)[0].offset
        if committed >= 0:
            return int(committed)
        low, _ = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        return int(low)
    finally:
        consumer.close()


def read_range(
    kafka: KafkaSettings, topic: str, partition: int, start: int, end: int, timeout_s: float = 60
) -> list[RawRecord]:
    """The committed records of ``topic[partition]`` from ``start`` up to (not including)
    ``end``; raises rather than return part of the range."""
    consumer = _reader(kafka)
    try:
        records = _read(consumer, TopicPartition(topic, partition), start, end, timeout_s)
        return [
            RawRecord(
                topic,
                partition,
                int(m.offset()),
                m.key(),
                m.value(),
                [(k, v or b"") for k, v in (m.headers() or [])],
            )
            for m in records
        ]
    finally:
        consumer.close()
