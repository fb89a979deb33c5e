"""An asyncio face for confluent-kafka's Producer: ``await send(...)`` resolves when Kafka has
acknowledged the record (``acks=all``, idempotent), without blocking the event loop.

Why not ``confluent_kafka.aio.AIOProducer``: it batches calls in Python and runs them on a
thread pool with a buffer timeout, adding latency to each acknowledgement; here ``produce`` is
called directly (it only enqueues into librdkafka and never blocks), and one thread runs
``poll`` to deliver acknowledgements back to the loop with ``call_soon_threadsafe``: once per
batch (``produce_batch``: a request's events resolve one future together), not once per record.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers.errors import RecordRefused, Unavailable
from sealstream.settings import KafkaSettings

Headers = list[tuple[str, str | bytes | None]]
PARTITION_UA = -1  # librdkafka's RD_KAFKA_PARTITION_UA: its partitioner picks by the key
# topic, value, key, headers, partition (None: librdkafka's partitioner picks it by the key)
Record = tuple[str, bytes, bytes | None, Headers | None, int | None]


@dataclass(frozen=True)
class Ack:
    topic: str
    partition: int
    offset: int


# What Kafka answers for a record it will never take, whatever the retry: the client must
# hear a 4xx, not a 503 that sends it into retries (an attack run saw a 1 MB string get 503).
_REFUSED_FOR_GOOD = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
}


def delivery_error(err: KafkaError, what: str) -> Unavailable | RecordRefused:
    if err.code() in _REFUSED_FOR_GOOD:
        return RecordRefused(f"Kafka refused the {what} for good: {err.str()}")
    return Unavailable(
        f"Kafka did not acknowledge the {what}: {err.str()}", code="kafka_unavailable"
    )


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
        headers: Headers | None = None,
    ) -> Ack:
        """Produce one record and wait for its acknowledgement.

        Raises :class:`Unavailable` if Kafka refuses it or does not acknowledge it within the
        delivery timeout; the caller then must not report the event as accepted.
        """
        (result,) = await self.produce_batch([(topic, value, key, headers, None)]).wait()
        if isinstance(result, Unavailable | RecordRefused):
            raise result
        return result

    def produce_batch(self, records: Sequence[Record]) -> PendingBatch:
        """Enqueue ``records`` (topic, value, key, headers, partition) now; await ``.wait()``
        for the acks.

        One future per batch, not per record: the poll thread wakes the event loop once, when
        the last delivery report of the batch arrives. A record that librdkafka refuses at
        once (full queue, unknown topic) is reported as :class:`Unavailable` in its slot.
        """
        batch = PendingBatch(asyncio.get_running_loop(), len(records))
        produce = self._producer.produce
        for index, (topic, value, key, headers, partition) in enumerate(records):
            try:
                produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=functools.partial(batch.on_delivery, index, topic),
                    partition=PARTITION_UA if partition is None else partition,
                )
            except BufferError:
                batch.refuse(
                    index,
                    Unavailable(
                        "the gateway's Kafka queue is full; retry shortly",
                        code="kafka_backpressure",
                    ),
                )
            except KafkaException as exc:
                batch.refuse(index, delivery_error(exc.args[0], "event"))
        batch.sealed()
        return batch

    def produce_nowait(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        on_error: Callable[[Unavailable], None],
    ) -> None:
        """Enqueue one record without waiting for it; ``on_error`` runs (on the poll thread)
        if Kafka does not take it. Raises :class:`Unavailable` if it cannot even be queued."""

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                on_error(
                    Unavailable(
                        f"Kafka did not acknowledge the record: {err.str()}",
                        code="kafka_unavailable",
                    )
                )

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        except BufferError as exc:
            raise Unavailable(
                "the gateway's Kafka queue is full; retry shortly", code="kafka_backpressure"
            ) from exc
        except KafkaException as exc:
            raise Unavailable(f"Kafka refused the record: {exc}", code="kafka_unavailable") from exc

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


class PendingBatch:
    """The delivery reports of one :meth:`AsyncProducer.produce_batch` call.

    Slots are filled by the poll thread; a lock guards the count of outstanding records,
    which starts one above the batch size until every record has been handed to librdkafka,
    so the future cannot resolve while records are still being enqueued.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self._results: list[Ack | Unavailable | RecordRefused | None] = [None] * size
        self._outstanding = size + 1
        self._lock = threading.Lock()
        self._future: asyncio.Future[None] = loop.create_future()

    def on_delivery(self, index: int, topic: str, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._results[index] = delivery_error(err, "event")
        else:
            self._results[index] = Ack(
                msg.topic() or topic, msg.partition() or 0, msg.offset() or 0
            )
        if self._count_down():
            self._loop.call_soon_threadsafe(_resolve, self._future, None)

    def refuse(self, index: int, error: Unavailable | RecordRefused) -> None:
        self._results[index] = error
        self._count_down()  # never the last: the enqueueing guard is still counted

    def sealed(self) -> None:
        """Every record is enqueued (called on the loop's thread)."""
        if self._count_down():
            _resolve(self._future, None)

    def _count_down(self) -> bool:
        with self._lock:
            self._outstanding -= 1
            return self._outstanding == 0

    async def wait(self, timeout_s: float | None = None) -> list[Ack | Unavailable | RecordRefused]:
        """Each record's :class:`Ack`, or :class:`Unavailable` if Kafka refused it or had not
        acknowledged it when ``timeout_s`` ran out (later reports are ignored)."""
        if timeout_s is None:
            await self._future
        else:
            await asyncio.wait([self._future], timeout=timeout_s)
        late = Unavailable("Kafka did not acknowledge the event in time", code="kafka_unavailable")
        return [late if r is None else r for r in list(self._results)]


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
