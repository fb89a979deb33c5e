"""PendingBatch: one future per produced batch, one result per record."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError

from producers.errors import RecordRefused, Unavailable
from producers.kafka import Ack, PendingBatch


class _Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return "events.raw"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class _Err:
    def __init__(self, code: int = KafkaError._TRANSPORT, text: str = "broker down") -> None:
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return self._text


def test_batch_resolves_once_every_record_is_reported_from_another_thread() -> None:
    async def main() -> list[Any]:
        batch = PendingBatch(asyncio.get_running_loop(), 3)
        batch.refuse(1, Unavailable("queue full", code="kafka_backpressure"))
        batch.sealed()

        def reports() -> None:
            batch.on_delivery(2, "events.raw", _Err(), _Msg(0, 0))  # type: ignore[arg-type]
            batch.on_delivery(0, "events.raw", None, _Msg(3, 41))  # type: ignore[arg-type]

        thread = threading.Thread(target=reports)
        thread.start()
        results = await batch.wait(5)
        thread.join()
        return results

    ok, refused, failed = asyncio.run(main())
    assert ok == Ack("events.raw", 3, 41)
    assert isinstance(refused, Unavailable) and refused.code == "kafka_backpressure"
    assert isinstance(failed, Unavailable) and "broker down" in str(failed)


def test_records_not_reported_in_time_are_unavailable() -> None:
    async def main() -> list[Any]:
        batch = PendingBatch(asyncio.get_running_loop(), 2)
        batch.sealed()
        batch.on_delivery(0, "events.raw", None, _Msg(0, 7))  # type: ignore[arg-type]
        return await batch.wait(0.05)

    ok, late = asyncio.run(main())
    assert ok == Ack("events.raw", 0, 7)
    assert isinstance(late, Unavailable) and late.code == "kafka_unavailable"


def test_a_record_kafka_can_never_take_is_refused_for_good_not_unavailable() -> None:
    """A 503 would send the client into retries of a permanent failure (an attack run saw a
    1 MB string answered 503 with Retry-After)."""

    async def main() -> list[Any]:
        batch = PendingBatch(asyncio.get_running_loop(), 2)
        batch.sealed()
        too_large = _Err(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
        batch.on_delivery(0, "events.raw", too_large, _Msg(0, 0))  # type: ignore[arg-type]
        batch.on_delivery(1, "events.raw", _Err(), _Msg(0, 0))  # type: ignore[arg-type]
        return await batch.wait(5)

    refused, transient = asyncio.run(main())
    assert isinstance(refused, RecordRefused) and refused.status == 413
    assert refused.code == "event_too_large"
    assert isinstance(transient, Unavailable) and transient.status == 503
