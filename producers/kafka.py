"""An asyncio face for confluent-kafka's Producer: ``await send(...)`` resolves when Kafka has
acknowledged the record (``acks=all``, idempotent), without blocking the event loop.

Why not ``confluent_kafka.aio.AIOProducer``: it batches calls in Python and runs them on a
thread pool with a buffer timeout, adding latency to each acknowledgement; here ``produce`` is
called directly (it only enqueues into librdkafka and never blocks), and one thread runs
``poll`` to deliver acknowledgements back to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers.errors import Unavailable
from sealstream.settings import KafkaSettings


@dataclass(frozen=True)
class Ack:
    topic: str
    partition: int
    offset: int


class AsyncProducer:
    def __init__(
        self, kafka: KafkaSettings, delivery_timeout_ms: int = 10_000, linger_ms: int = 0
    ) -> None:
        self._producer = Producer(
            kafka.client_config(
                acks="all",
                enable_idempotence=True,
                linger_ms=linger_ms,
                compression_type="lz4",
                delivery_timeout_ms=delivery_timeout_ms,
                request_timeout_ms=min(delivery_timeout_ms, 5_000),
                queue_buffering_max_messages=200_000,
                client_id=f"{kafka.client_id}-gateway",
            )
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-acks", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> Ack:
        """Produce one record and wait for its acknowledgement.

        Raises :class:`Unavailable` if Kafka refuses it or does not acknowledge it within the
        delivery timeout; the caller then must not report the event as accepted.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ack] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                result: Ack | Exception = Unavailable(
                    f"Kafka did not acknowledge the event: {err.str()}", code="kafka_unavailable"
                )
            else:
                result = Ack(msg.topic() or topic, msg.partition() or 0, msg.offset() or 0)
            loop.call_soon_threadsafe(_resolve, future, result)

        try:
            self._producer.produce(
                topic, value=value, key=key, headers=headers, on_delivery=on_delivery
            )
        except BufferError as exc:
            raise Unavailable(
                "the gateway's Kafka queue is full; retry shortly", code="kafka_backpressure"
            ) from exc
        except KafkaException as exc:
            raise Unavailable(f"Kafka refused the event: {exc}", code="kafka_unavailable") from exc
        return await future

    def ready(self, timeout_s: float = 2.0) -> bool:
        """True when a broker answers a metadata request."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return True

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush outstanding records; return how many were still unacknowledged."""
        remaining = self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=2)
        return int(remaining)


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
