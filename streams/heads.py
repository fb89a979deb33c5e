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

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from schemas.serde import Decoder
from sealstream.integrity import ChainHead, signing_bytes
from sealstream.keys import HmacKeyring
from sealstream.settings import KafkaSettings
from streams.dedup import dedup_key

# the index a chain position records for a record done whole (a plain record, a frame
# dead-lettered whole, or a head written before frames): every event of its offset is done
WHOLE = 2**31 - 1
log = logging.getLogger(__name__)
# how many of a partition's last records are kept to find the chain's head among
HEAD_CANDIDATES = 64


@dataclass(frozen=True)
class CommittedHead:
    head: ChainHead
    source_offset: int
    # the event's index in its frame (its signed record's source_index header), None for a
    # plain input record
    source_index: int | None = None


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


def _scan(
    consumer: Consumer,
    tp: TopicPartition,
    start: int,
    end: int,
    timeout_s: float,
    visit: Callable[[Any], None],
    idle_s: float | None = None,
) -> None:
    """Hand each committed record of ``tp`` in ``[start, end)`` to ``visit``, in order. Stops
    at ``end`` or when the consumer's position reaches it (transaction markers are never
    returned, so waiting for the offset ``end - 1`` itself could wait forever), or after
    ``idle_s`` without a record."""
    if start >= end:
        return
    consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
    deadline = time.monotonic() + timeout_s
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        batch = consumer.consume(500, 0.2)
        got = False
        for msg in batch:
            if msg.error() is not None:
                continue
            offset = msg.offset() or 0
            if offset >= end:
                return
            visit(msg)
            got = True
            if offset >= end - 1:
                return
        if got:
            idle_since = time.monotonic()
            continue
        position = consumer.position([TopicPartition(tp.topic, tp.partition)])[0].offset
        if position >= end:
            return
        if idle_s is not None and time.monotonic() - idle_since > idle_s:
            return
    raise TimeoutError(f"reading {tp.topic}[{tp.partition}] {start}..{end} took over {timeout_s} s")


def _read(
    consumer: Consumer,
    tp: TopicPartition,
    start: int,
    end: int,
    timeout_s: float,
    idle_s: float | None = None,
) -> list[Any]:
    """The committed records of ``tp`` in ``[start, end)`` (see ``_scan``)."""
    records: list[Any] = []
    _scan(consumer, tp, start, end, timeout_s, records.append, idle_s)
    return records


@dataclass(frozen=True)
class CommittedTail:
    """A signed partition's last committed record, and the events it signed recently."""

    head: CommittedHead | None
    recent: list[tuple[str, int]]  # (dedup key, signed at ms), oldest first
    foreign: list[int] = field(default_factory=list)  # offsets of records ``ours`` refused


def committed_tail(
    kafka: KafkaSettings,
    topic: str,
    partition: int,
    decoder: Decoder,
    since_ms: int = 0,
    max_recent: int = 0,
    timeout_s: float = 30.0,
    ours: Callable[[dict[str, Any]], bool] | None = None,
) -> CommittedTail:
    """The last committed signed record of ``topic[partition]`` and the dedup keys of the
    committed records signed at or after ``since_ms`` (at most the last ``max_recent``).

    With ``ours``, the head is the newest record it accepts: a record of another chain or
    with a signature the worker's keys do not verify (written by someone else allowed to write
    the topic, a super user) is no head to continue from. Found while another record showed
    to be the head, such records are in ``foreign``, and their event ids are not in ``recent``.
    Only the head candidates are decoded and verified (the newest first, usually one): a
    recent window of 50,000 entries is read from headers, as before."""
    consumer = _reader(kafka)
    try:
        tp = TopicPartition(topic, partition)
        # the high watermark (a consumer's get_watermark_offsets returns it whatever the
        # isolation level): an open transaction at the end stops the read at the last stable
        # offset instead, after idle_s without a record
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        recent_from = high
        if max_recent > 0 and high > low:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, partition, since_ms)], timeout=timeout_s
            )[0].offset
            if found >= 0:  # -1: no record that recent
                recent_from = max(low, high - max_recent, found)
        recent: list[tuple[int, str, int]] = []  # (offset, dedup key, signed at ms)
        last: deque[Any] = deque(maxlen=HEAD_CANDIDATES)

        def visit(msg: Any) -> None:
            if not msg.value():
                return
            last.append(msg)
            if (msg.offset() or 0) >= recent_from:
                recent.append((msg.offset(), _dedup_key(msg, decoder), int(msg.timestamp()[1])))

        window = 64
        start = max(low, min(recent_from, high - window))
        while True:
            _scan(consumer, tp, start, high, timeout_s, visit, idle_s=1.0)
            if last or start == low:
                break
            window *= 4  # the tail held no committed record (aborted writes): look further
            recent_from, high, start = high, start, max(low, start - window)
        found_head, foreign = _last_of_ours(consumer, tp, low, list(last), decoder, ours, timeout_s)
        head = None
        if found_head is not None:
            msg, record = found_head
            index = dict(msg.headers() or []).get("source_index")
            head = CommittedHead(
                ChainHead(int(record["seq"]), str(record["hash"])),
                int(record["source_offset"]),
                None if index is None else int(index),
            )
        refused = set(foreign)
        keys = [(key, at) for offset, key, at in recent if offset not in refused]
        return CommittedTail(head, keys, foreign)
    finally:
        consumer.close()


def _last_of_ours(
    consumer: Consumer,
    tp: TopicPartition,
    low: int,
    candidates: list[Any],
    decoder: Decoder,
    ours: Callable[[dict[str, Any]], bool] | None,
    timeout_s: float,
) -> tuple[tuple[Any, dict[str, Any]] | None, list[int]]:
    """The newest of ``candidates`` (the last records read, oldest first) that ``ours``
    accepts, reading further back when none is; and the offsets of those it refused."""
    foreign: list[int] = []
    end: int | None = None
    while True:
        for msg in reversed(candidates):
            try:
                _, record = decoder.decode(msg.value())
                accepted = ours is None or ours(record)
            except Exception:  # undecodable, or fields missing: not the worker's either
                accepted = False
            if accepted:
                return (msg, record), foreign
            foreign.append(int(msg.offset()))
        if candidates:
            end = int(candidates[0].offset())
        if end is None or end <= low:
            break
        begin = max(low, end - HEAD_CANDIDATES)
        candidates = [m for m in _read(consumer, tp, begin, end, timeout_s, 1.0) if m.value()]
        end = begin  # the next chunk, if any, ends where this one begins
    return None, foreign


def of_chain(chain_id: str, keys: HmacKeyring) -> Callable[[dict[str, Any]], bool]:
    """Whether a signed record is chain ``chain_id``'s own (``committed_tail``'s ``ours``): its
    chain id, and a signature ``keys`` verify. Anyone else allowed to write the output topic
    (a super user, a misconfigured ACL) cannot make one. A record signed with a key the
    keyring no longer holds (``sealstream keys rotate --retire``) still counts, with a warning:
    refusing it would restart a quiet chain from genesis."""

    def ours(record: dict[str, Any]) -> bool:
        if record.get("chain_id") != chain_id:
            return False
        kid, mac = str(record["key_id"]), bytes.fromhex(str(record["signature"]))
        verified = keys.verify(kid, signing_bytes(record), mac)
        if verified is None:
            log.warning("chain %s resumes from a record signed with retired key %s", chain_id, kid)
        return verified is not False

    return ours


def done_through(head: list[Any] | None) -> tuple[int, int] | None:
    """(offset, index) of the last input event a chain head ``[seq, hash, offset, index]``
    records as done (a head of three, written before frames, did its offset whole)."""
    if not head or len(head) < 3:
        return None
    return int(head[2]), int(head[3]) if len(head) > 3 else WHOLE


def resume_head(committed: CommittedHead | None, dead: tuple[int, int] | None) -> list[Any] | None:
    """The chain head a partition resumes from: the last committed signed record's sequence
    number and hash, and as done the later of its input event and ``dead``, the position of
    the newest committed dead letter (:func:`dead_letter_position`)."""
    head: list[Any] | None = None
    if committed is not None:
        index = WHOLE if committed.source_index is None else committed.source_index
        head = [committed.head.seq, committed.head.hash, committed.source_offset, index]
    done = done_through(head)
    if dead is not None and (done is None or dead > done):
        genesis = ChainHead()
        seq, digest = (head[0], head[1]) if head else (genesis.seq, genesis.hash)
        head = [seq, digest, dead[0], dead[1]]
    return head


def dead_letter_position(
    kafka: KafkaSettings,
    dlq_topic: str,
    dlq_partition: int,
    topic: str,
    partition: int,
    window: int = 256,
    timeout_s: float = 30.0,
) -> tuple[int, int] | None:
    """(offset, index) of the newest committed dead letter of input ``topic[partition]``
    among the last ``window`` records of ``dlq_topic[dlq_partition]``, or None.

    A dead letter commits in the transaction of the input it came from, like a signed record,
    so an event dead-lettered after the chain's last signed one is done as well: without this
    a restart dead-lettered it again (and an event that had failed enrichment could then be
    signed as well as dead-lettered). Frames made that window up to a frame long."""
    consumer = _reader(kafka)
    try:
        tp = TopicPartition(dlq_topic, dlq_partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        found: list[tuple[int, int]] = []
        wanted = (topic.encode(), str(partition).encode())

        def visit(msg: Any) -> None:
            headers = dict(msg.headers() or [])
            if (headers.get("dlq.topic"), headers.get("dlq.partition")) != wanted:
                return
            try:
                index = headers.get("dlq.index")
                found.append((int(headers["dlq.offset"]), int(index) if index else WHOLE))
            except (KeyError, ValueError):
                return

        _scan(consumer, tp, max(low, high - window), high, timeout_s, visit, idle_s=1.0)
        return max(found) if found else None
    finally:
        consumer.close()


def _dedup_key(msg: Any, decoder: Decoder) -> str:
    """From the signed record's headers (written since the window existed), else its value."""
    headers = dict(msg.headers() or [])
    tenant, event_id = headers.get("tenant"), headers.get("event_id")
    if tenant is None or event_id is None:
        _, record = decoder.decode(msg.value())
        return dedup_key(str(record["tenant"]), str(record["event_id"]))
    return dedup_key(tenant.decode(), event_id.decode())


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
