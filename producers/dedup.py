"""Receipts by event id: deduplication of retried events and ``GET /v1/receipts/{id}``.

Every receipt the gateway issues is also written to the compacted topic ``receipts`` (key
``<tenant>/<event_id>``). Each gateway instance follows that topic, so a retry that reaches
another instance, or arrives after a restart, still gets the first receipt and produces
nothing. The in-memory index is bounded (oldest entries drop first); the topic keeps 30 days.

What this cannot catch: a gateway killed after Kafka acknowledged an event and before the
receipt was written (or the client saw the 202). The retry is then produced again, and the
worker drops the second copy (``streams/dedup.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from typing import Any

import orjson

from producers.errors import Unavailable
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
        self.persist_failures = 0
        # event keys a request on this gateway is producing now (event loop thread only)
        self._claims: dict[str, asyncio.Event] = {}

    @staticmethod
    def key(tenant: str, event_id: str) -> str:
        return f"{tenant}/{event_id}"

    def get(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(self.key(tenant, event_id))

    async def wait_unclaimed(self, keys: list[str]) -> None:
        """Until no other request of this gateway is producing any of the events ``keys``: a
        concurrent copy then finds its receipt instead of producing a second record. The
        caller claims them before its next ``await``."""
        while True:
            busy = next((self._claims[k] for k in keys if k in self._claims), None)
            if busy is None:
                return
            await busy.wait()

    def claim(self, key: str) -> None:
        self._claims[key] = asyncio.Event()

    def unclaim(self, key: str) -> None:
        claim = self._claims.pop(key, None)
        if claim is not None:
            claim.set()

    def _remember(self, receipt: dict[str, Any]) -> None:
        key = self.key(str(receipt["tenant"]), str(receipt["event_id"]))
        with self._lock:
            if key in self._items:
                return  # the first receipt wins
            self._items[key] = receipt
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def put(self, receipt: dict[str, Any]) -> None:
        """Remember a receipt and persist it in the background.

        Not awaited on the request path: the event itself is already acknowledged by Kafka,
        and the receipts topic is an index for deduplication and look-ups (the worker drops an
        event id produced twice), so its write must not add a round trip to every 202.
        Fire and forget: no task or future per receipt, only a callback if Kafka refuses it.
        """
        self._remember(receipt)
        if self.producer is not None:
            key = self.key(str(receipt["tenant"]), str(receipt["event_id"]))
            try:
                self.producer.produce_nowait(
                    self.topic, orjson.dumps(receipt), key.encode(), self._failed
                )
            except Unavailable as exc:
                self._failed(exc)

    def _failed(self, error: Unavailable) -> None:
        with self._lock:
            self.persist_failures += 1
        log.warning("receipt not persisted error=%s", error)

    def follow(self, kafka: KafkaSettings) -> TopicFollower:
        """Load and keep following the receipts topic (other instances, earlier runs)."""

        def apply(key: bytes | None, value: bytes | None) -> None:
            # Most records are this instance's own receipts coming back: known by their key,
            # and the first receipt wins anyway, so skip parsing them.
            if value and (key is None or key.decode(errors="replace") not in self._items):
                self._remember(orjson.loads(value))

        return TopicFollower(kafka, self.topic, apply, "gateway-receipts")

    def __len__(self) -> int:
        return len(self._items)
