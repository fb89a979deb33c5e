"""How far both sinks had committed when ``sealstream verify`` read the stores, from Kafka:
per partition of the signed topic the committed offset both consumer groups passed, and per
chain the last sequence number below it. Beyond them an entry may be in one store and not yet
in the other while the pipeline runs: in flight, not a finding.
"""

from __future__ import annotations

import uuid
from typing import Any


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


def sink_dead_letters(kafka: Any, topic: str, decoder: Any) -> dict[tuple[str, int], str]:
    """(chain, seq) of every signed event in a sink's dead-letter topic, and where it is
    (``topic partition@offset`` and the reason)."""
    from sealstream.deadletters import DeadLetterHeaders
    from sealstream.follow import read_to_end

    found: dict[tuple[str, int], str] = {}
    try:
        messages = list(read_to_end(kafka, topic))
    except LookupError:  # no such topic: no dead letters
        return found
    for message in messages:
        try:
            record = decoder.decode(message.value() or b"")[1]
            key = (str(record["chain_id"]), int(record["seq"]))
        except Exception:  # not a signed record: nothing to match
            continue
        headers: dict[str, str | bytes | None] = dict(message.headers() or [])
        error = DeadLetterHeaders.from_headers(headers)
        found[key] = f"{topic} {message.partition()}@{message.offset()} ({error.reason})"
    return found
