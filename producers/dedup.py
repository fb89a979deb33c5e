"""Receipts by event id: deduplication of retried events and ``GET /v1/receipts/{id}``.

Every receipt the gateway issues is also written to the compacted topic ``receipts`` (key
``<tenant>/<event_id>``). Each gateway instance follows that topic, so a retry that reaches
another instance, or arrives after a restart, still gets the first receipt and produces
nothing. The in-memory index is bounded (oldest entries drop first); the topic keeps 30 days.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from typing import Any

import orjson

from producers.kafka import AsyncProducer
from sealstream.follow import TopicFollower
from sealstream.settings import KafkaSettings

log = logging.getLogger("sealstream.gateway.receipts")


class ReceiptStore:
    def __init__(self, max_entries: int, producer: AsyncProducer | None, topic: str) -> None:
        self.max_entries = max_entries
        self.producer = producer
        self.topic = topic
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()
        self.persist_failures = 0

    @staticmethod
    def _key(tenant: str, event_id: str) -> str:
        return f"{tenant}/{event_id}"

    def get(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(self._key(tenant, event_id))

    def _remember(self, receipt: dict[str, Any]) -> None:
        key = self._key(str(receipt["tenant"]), str(receipt["event_id"]))
        with self._lock:
            if key in self._items:
                return  # the first receipt wins
            self._items[key] = receipt
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def put(self, receipt: dict[str, Any]) -> None:
        """Remember a receipt and persist it in the background.

        Not awaited on the request path: the event itself is already acknowledged by Kafka,
        and the receipts topic is an index for deduplication and look-ups (downstream stages
        also deduplicate on event_id), so its write must not add a round trip to every 202.
        """
        self._remember(receipt)
        if self.producer is not None:
            key = self._key(str(receipt["tenant"]), str(receipt["event_id"]))
            task = asyncio.ensure_future(
                self.producer.send(self.topic, orjson.dumps(receipt), key.encode())
            )
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.persist_failures += 1
            log.warning("receipt not persisted error=%s", task.exception())

    def follow(self, kafka: KafkaSettings) -> TopicFollower:
        """Load and keep following the receipts topic (other instances, earlier runs)."""

        def apply(key: bytes | None, value: bytes | None) -> None:
            if value:
                self._remember(orjson.loads(value))

        return TopicFollower(kafka, self.topic, apply, "gateway-receipts")

    def __len__(self) -> int:
        return len(self._items)
