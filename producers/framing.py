"""Events placed in frames: one ``events.raw`` record per partition (at most
``frame_max_events`` events and the topic's record limit each) instead of one per event, for
a request and the tenant's other requests of the same event-loop turn (:class:`FrameWindow`).

Each event goes to the partition its key (``tenant/event_id``) picks under librdkafka's own
partitioner (``sealstream.topics.partition_for``), framed or not, so every copy of an event
still meets one chain's dedup window. A partition's lone event is written as a plain record:
a frame of one would only cost its encoding. Why frames: schemas/frames.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from producers.kafka import Headers, PendingBatch, Record
from producers.turns import TurnBatch
from schemas.frames import FramedEvent, encode_frame, entry_size
from sealstream.topics import partition_for

log = logging.getLogger("sealstream.gateway")
# value, key, headers of one event as a plain record
Event = tuple[bytes, bytes, Headers]
# a record's allowance beyond its frame's entries (the frame's own framing, the record batch)
FRAME_OVERHEAD = 1024


def _bytes_headers(headers: Headers) -> list[tuple[str, bytes]]:
    return [
        (name, value if isinstance(value, bytes) else (value or "").encode())
        for name, value in headers
    ]


class Framer:
    """``partitions``: of the topic, or None when unknown (every event then a plain record,
    placed by librdkafka)."""

    def __init__(
        self, topic: str, partitions: int | None, max_events: int, max_record_bytes: int
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.max_events = max_events
        self.max_bytes = max(max_record_bytes - FRAME_OVERHEAD, 1)

    def records(self, events: Sequence[Event]) -> tuple[list[Record], list[int]]:
        """The records to produce, and for each event the index of the record that holds it."""
        if self.max_events == 1 or not self.partitions:
            return [(self.topic, v, k, h, None) for v, k, h in events], list(range(len(events)))
        # per partition, its open frame: (event indexes, their bytes so far)
        open_frames: dict[int, tuple[list[int], int]] = {}
        frames: list[tuple[int, list[int]]] = []
        placed = [0] * len(events)
        # each event's headers as bytes, once: sized here, written into its frame below
        converted = [_bytes_headers(headers) for _, _, headers in events]
        for index, (value, key, _) in enumerate(events):
            partition = partition_for(key, self.partitions)
            size = entry_size(key, converted[index], value)
            members, used = open_frames.get(partition, ([], 0))
            if members and (len(members) >= self.max_events or used + size > self.max_bytes):
                members, used = [], 0
            if not members:
                frames.append((partition, members))
            members.append(index)
            open_frames[partition] = (members, used + size)
        records: list[Record] = []
        for slot, (partition, members) in enumerate(frames):
            for index in members:
                placed[index] = slot
            if len(members) == 1:
                value, key, headers = events[members[0]]
                records.append((self.topic, value, key, headers, partition))
                continue
            frame = encode_frame(
                [FramedEvent(events[i][1], dict(converted[i]), events[i][0]) for i in members]
            )
            records.append((self.topic, frame, None, None, partition))
        return records, placed


class FrameWindow:
    """Frames across the requests of one tenant that reach Kafka in the same turn of the
    event loop (producers/turns.py): 25 concurrent single-event requests of a partition can
    share one record, as one request's events do, so the worker pays faust's per-message cost
    once for them. Frames never mix tenants (a receipt names its record: a shared one would
    tell one tenant of another's traffic). Each request gets the batch and, for each of its
    events, the index of the record holding it.
    """

    def __init__(self, framer: Framer, producer: Any) -> None:
        self.framer = framer
        self.producer = producer
        self._turns: TurnBatch[Event, tuple[PendingBatch, int]] = TurnBatch(self._produce)

    async def produce(self, tenant: str, events: Sequence[Event]) -> tuple[PendingBatch, list[int]]:
        if not events:  # nothing to share a turn with: an empty batch, at once
            return self.producer.produce_batch([]), []
        placed = await self._turns.submit(tenant, events)
        return placed[0][0], [slot for _, slot in placed]

    def _produce(self, events: list[Event]) -> list[tuple[PendingBatch, int]]:
        records, placed = self.framer.records(events)
        batch = self.producer.produce_batch(records)
        return [(batch, slot) for slot in placed]


class PartitionWatch:
    """Keeps ``framer.partitions`` equal to the topic's partition count, read every
    ``interval_s`` on a thread of its own: partitions added while the gateway runs (or a
    topic that did not exist at start-up) are framed by the count librdkafka uses too."""

    def __init__(self, framer: Framer, count: Callable[[], int], interval_s: float = 30.0) -> None:
        self.framer = framer
        self._count = count
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="partition-watch", daemon=True)
        self._thread.start()

    def check(self) -> None:
        try:
            partitions = self._count()
        except Exception as exc:  # the broker is down: keep the count known
            log.warning("partition count of %s not read: %s", self.framer.topic, exc)
            return
        if partitions != self.framer.partitions:
            log.warning(
                "%s has %s partitions (framing by %s until now)",
                self.framer.topic,
                partitions,
                self.framer.partitions,
            )
            self.framer.partitions = partitions

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
