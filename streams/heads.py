"""Where a chain really stands: the last committed record of its partition of the output.

faust's table is the working copy of the chain heads, but after a partition moves between
workers its recovered value can lag behind what the previous owner had already committed (seen
in the kill tests as two events signed with the same sequence number). The output topic cannot
lag or lead: a signed record and the input offset it consumed are committed in one transaction.
So when a worker starts processing a partition it reads that partition's last committed signed
record (read_committed) and continues from it, whatever the table says.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from schemas.serde import Decoder
from sealstream.integrity import ChainHead
from sealstream.settings import KafkaSettings


@dataclass(frozen=True)
class CommittedHead:
    head: ChainHead
    source_offset: int


def last_committed(
    kafka: KafkaSettings, topic: str, partition: int, decoder: Decoder, timeout_s: float = 30.0
) -> CommittedHead | None:
    consumer = Consumer(
        kafka.client_config(
            group_id=f"sealstream-heads-{uuid.uuid4()}",
            isolation_level="read_committed",
            enable_auto_commit=False,
            client_id="sealstream-worker-heads",
        )
    )
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout_s
        )
        window = 64
        while True:
            start = max(low, high - window)
            consumer.assign([TopicPartition(topic, partition, start)])
            last = None
            while True:
                msg = consumer.poll(1.0)
                if msg is None:
                    break  # reached the last stable offset
                if msg.error() is None and msg.value():
                    last = msg.value()
                if (msg.offset() or 0) >= high - 1:
                    break
            if last is not None:
                _, record = decoder.decode(last)
                return CommittedHead(
                    ChainHead(int(record["seq"]), str(record["hash"])),
                    int(record["source_offset"]),
                )
            if start == low:
                return None
            window *= 4
    finally:
        consumer.close()
