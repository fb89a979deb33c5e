"""The registry's Kafka store: a reader thread that replays ``_schemas`` into
:class:`RegistryState`, and a writer that appends a record and waits until the reader has
applied it (so a write's outcome is decided by the log, the same way on every instance).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from schemas.registry.errors import RegistryError, StoreTimeout
from schemas.registry.state import RegistryState
from sealstream.settings import KafkaSettings
from sealstream.topics import TopicSpec, ensure_topics

_OUTCOMES_KEPT = 10_000


class KafkaStore:
    """Keeps ``state`` in step with the store topic and appends records to it."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, state: RegistryState, timeout_s: float = 10.0
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.state = state
        self.timeout_s = timeout_s
        self.lock = threading.RLock()  # guards state; held by the reader while it applies
        self._applied = threading.Condition(self.lock)
        self._applied_offset = -1
        self._outcomes: OrderedDict[int, bool] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Create the topic if needed, replay it to the end, then keep following it."""
        ensure_topics(
            self.kafka,
            [TopicSpec(self.topic, 1, {"cleanup.policy": "compact"}, "schema registry state")],
        )
        self._producer = Producer(
            self.kafka.client_config(
                acks="all", enable_idempotence=True, linger_ms=0, client_id="sealstream-registry"
            )
        )
        self._consumer = Consumer(
            self.kafka.client_config(
                group_id=f"sealstream-registry-{uuid.uuid4()}",  # never commits; assign only
                enable_auto_commit=False,
                enable_partition_eof=False,
                isolation_level="read_committed",
                client_id="sealstream-registry",
            )
        )
        self._consumer.assign([KafkaPartition(self.topic, 0, OFFSET_BEGINNING)])
        high = self._high_watermark()
        self._thread = threading.Thread(target=self._run, name="registry-reader", daemon=True)
        self._thread.start()
        self.wait_until_applied(high - 1, timeout_s=max(self.timeout_s, 60.0))

    def _high_watermark(self) -> int:
        """End of the store topic; retried while a just-created topic's metadata propagates."""
        assert self._consumer is not None
        deadline = time.monotonic() + max(self.timeout_s, 30.0)
        while True:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    KafkaPartition(self.topic, 0), timeout=self.timeout_s
                )
                return int(high)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise RegistryError(f"Cannot read the store topic {self.topic}: {exc}") from exc
                time.sleep(0.5)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush(5)

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None

    # -- reading --------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._consumer is not None
        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(0.2)
            except KafkaException as exc:  # fatal consumer error: report unhealthy
                self._error = str(exc)
                return
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._error = None if err.retriable() else err.str()
                continue
            self._error = None
            offset = msg.offset()
            assert offset is not None
            with self.lock:
                accepted = self.state.apply(msg.key(), msg.value())
                self._outcomes[offset] = accepted
                while len(self._outcomes) > _OUTCOMES_KEPT:
                    self._outcomes.popitem(last=False)
                self._applied_offset = offset
                self._applied.notify_all()

    def wait_until_applied(self, offset: int, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        with self._applied:
            while self._applied_offset < offset:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreTimeout(
                        f"Timed out waiting for the registry to read {self.topic} up to "
                        f"offset {offset} (at {self._applied_offset})"
                    )
                self._applied.wait(left)

    # -- writing --------------------------------------------------------------------------

    def write(self, key: bytes, value: bytes | None) -> bool:
        """Append one record, wait until it is applied, return whether it was accepted."""
        assert self._producer is not None
        delivered: dict[str, Any] = {}
        done = threading.Event()

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            delivered["err"], delivered["offset"] = err, (msg.offset() if err is None else None)
            done.set()

        try:
            self._producer.produce(self.topic, key=key, value=value, on_delivery=on_delivery)
        except (KafkaException, BufferError) as exc:
            raise RegistryError(f"Error in the backend data store: {exc}") from exc
        deadline = time.monotonic() + self.timeout_s
        while not done.is_set():
            if time.monotonic() > deadline:
                raise StoreTimeout()
            self._producer.poll(0.05)
        if delivered["err"] is not None:
            raise RegistryError(f"Error in the backend data store: {delivered['err']}")
        offset = int(delivered["offset"])
        self.wait_until_applied(offset)
        with self.lock:
            return self._outcomes.get(offset, False)
