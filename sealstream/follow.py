"""Read topics from the start: once to their end (:func:`read_to_end`), or following them in a
background thread (:class:`TopicFollower`).

Several components keep a small table in memory that mirrors a topic: the gateway's receipts
and token revocations, the tenant directory. They all need the same loop: assign every
partition from the start, note where each ended at start-up (to know when the table is
complete), then keep applying records as they come.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from sealstream.settings import KafkaSettings

log = logging.getLogger("sealstream.follow")

OnRecord = Callable[[bytes | None, bytes | None], None]
BATCH = 500  # records a follower applies per consume call at most


def read_to_end(
    kafka: KafkaSettings,
    topic: str,
    *,
    partition: int | None = None,
    start: int | None = None,
    stop: int | None = None,
    idle_timeout_s: float = 10.0,
) -> Iterator[Message]:
    """Every committed record of ``topic`` (or one ``partition``), offsets ``[start, stop)``,
    up to the end offsets seen when each partition is reached; commits nothing.

    Ends by the consumer's position, not by the last record's offset: transaction markers
    take offsets too, so on a transactional topic the last record is not at ``end - 1``.
    LookupError if the topic does not exist.
    """
    consumer = Consumer(
        kafka.client_config(
            group_id=f"sealstream-read-{uuid.uuid4().hex}",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise LookupError(f"topic {topic!r} does not exist; run `sealstream topics create`")
        for number in sorted(meta.partitions):
            if partition is not None and number != partition:
                continue
            tp = TopicPartition(topic, number)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            begin = max(low, start or 0)
            end = high if stop is None else min(high, stop)
            if begin >= end:
                continue
            consumer.assign([TopicPartition(topic, number, begin)])
            last_progress = time.monotonic()
            while time.monotonic() - last_progress < idle_timeout_s:
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    if int(message.offset() or 0) >= end:
                        break
                    last_progress = time.monotonic()
                    yield message
                if consumer.position([tp])[0].offset >= end:
                    break
    finally:
        consumer.close()


class TopicFollower:
    def __init__(self, kafka: KafkaSettings, topic: str, on_record: OnRecord, name: str) -> None:
        self.topic = topic
        self.on_record = on_record
        self.name = name
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._consumer = Consumer(
            kafka.client_config(
                group_id=f"sealstream-{name}-{uuid.uuid4()}",  # assign only, never commits
                enable_auto_commit=False,
                client_id=f"sealstream-{name}",
            )
        )
        metadata = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            self._consumer.close()
            raise RuntimeError(f"topic {topic!r} does not exist; run `sealstream topics create`")
        partitions = sorted(metadata.partitions)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._ends = {
            p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        self._pending = {p for p, end in self._ends.items() if end > 0}
        if not self._pending:
            self.caught_up.set()
        self._thread = threading.Thread(target=self._run, name=f"follow-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._consumer.poll(0.2)
            if first is None:
                continue
            # then whatever else is already fetched, without waiting: one call (and one GIL
            # round trip) per batch instead of per record when the topic is busy
            for msg in [first, *self._consumer.consume(BATCH - 1, 0)]:
                self._apply(msg)
        self._consumer.close()

    def _apply(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("follower error topic=%s error=%s", self.topic, err)
            return
        try:
            self.on_record(msg.key(), msg.value())
        except Exception:  # one bad record must not stop the table
            log.exception("record not applied topic=%s offset=%s", self.topic, msg.offset())
        partition, offset = msg.partition(), msg.offset()
        done = offset is not None and offset + 1 >= self._ends.get(partition, 0)
        if partition in self._pending and done:
            self._pending.discard(partition)
            if not self._pending:
                self.caught_up.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
