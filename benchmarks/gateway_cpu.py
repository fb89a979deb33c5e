"""The gateway's own CPU per event, Kafka replaced by an instant acknowledgement.

    python -m benchmarks.gateway_cpu [--batches 1,10,100] [--seconds 2]

``IngestService.publish`` (parse, envelope, authorize, payload validation, dedup, Avro encode,
decisions, receipts) in this process, with a producer that acknowledges every record at once
and a schema registry answered from the repo's own catalog: what the gateway costs before any
network, so a change to the request path shows here first. Part of ``python -m benchmarks``
(its figures go in gateway.json under ``cpu``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import console
from producers.dedup import ReceiptStore
from producers.framing import Framer
from producers.kafka import PendingBatch, Record
from producers.limits import RecordLimits
from producers.metrics import Metrics
from producers.policy import PolicyStore
from producers.ratelimit import RateLimiter
from producers.receipts import ReceiptIssuer
from producers.schemabook import SchemaBook
from producers.service import IngestService, RequestContext
from schemas.catalog import Catalog
from sealstream.auth import Principal
from sealstream.keys import load_hmac_keyring, load_receipt_signer
from sealstream.settings import GatewaySettings, KeySettings

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 10, 100)


class InstantProducer:
    """Acknowledges every record at once, at increasing offsets."""

    def __init__(self) -> None:
        self.offset = 0

    def produce_batch(self, records: Sequence[Record]) -> PendingBatch:
        batch = PendingBatch(asyncio.get_running_loop(), len(records))
        for index, (topic, *_rest) in enumerate(records):
            self.offset += 1
            batch.on_delivery(index, topic, None, _Delivered(topic, self.offset))  # type: ignore[arg-type]
        batch.sealed()
        return batch

    def produce_nowait(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Delivered:
    """What a delivery report's message answers: its topic, partition and offset."""

    def __init__(self, topic: str, offset: int) -> None:
        self._topic, self._offset = topic, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class _Found:
    schema_id = 1


class CatalogRegistry:
    """``lookup_schema`` answered without a registry: every schema gets id 1."""

    def lookup_schema(self, subject: str, schema: Any) -> _Found:
        return _Found()


def service(keys_dir: Path) -> IngestService:
    keys = KeySettings(dir=keys_dir)
    settings = GatewaySettings(policy_file=ROOT / "config" / "policy.yaml")
    producer: Any = InstantProducer()
    return IngestService(
        settings,
        PolicyStore(settings.policy_file),
        RateLimiter(1e9, 10**9, 1e9, 10**9),
        producer,
        SchemaBook.load(CatalogRegistry(), Catalog(), settings.raw_topic),
        ReceiptIssuer(load_receipt_signer(keys), load_hmac_keyring(keys)),
        ReceiptStore(1_000_000, None, settings.receipts_topic),
        Metrics(),
        RecordLimits(1_000_000, "events.raw"),
        Framer(settings.raw_topic, 6, settings.frame_max_events, 1_000_000),
    )


def body(batch: int, start: int) -> bytes:
    now = dt.datetime.now(dt.UTC).isoformat()
    events = [
        {
            "event_type": "page_view",
            "tenant": "acme",
            "occurred_at": now,
            "payload": {"session_id": f"s-{i % 1000}", "url": f"/p/{i}", "user_id": f"u-{i % 97}"},
        }
        for i in range(start, start + batch)
    ]
    return orjson.dumps({"events": events} if batch > 1 else events[0])


async def _drive(svc: IngestService, batch: int, seconds: float) -> float:
    principal = Principal(
        "bench",
        "acme",
        frozenset({"events:write"}),
        frozenset({"publisher"}),
        "bench",
        None,
        0,
        2**40,
        "k",
    )
    bodies = [body(batch, i * batch) for i in range(50)]
    events = 0
    started = time.process_time()
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        ctx = RequestContext(f"r-{n}", f"c-{n}")
        result = await svc.publish(principal, bodies[n % len(bodies)], ctx)
        events += len(result.accepted)
        n += 1
    return (time.process_time() - started) / max(1, events) * 1e6


def run(batches: Sequence[int] = BATCHES, seconds: float = 2.0, runs: int = 3) -> dict[str, Any]:
    """CPU µs per accepted event at each batch size; medians of ``runs``."""
    with tempfile.TemporaryDirectory() as tmp:
        svc = service(Path(tmp))
        asyncio.run(_drive(svc, 10, 0.5))  # warm-up
        per: dict[int, list[float]] = {b: [] for b in batches}
        for _ in range(runs):
            for batch in batches:
                per[batch].append(asyncio.run(_drive(svc, batch, seconds)))
    return {
        "cpu_us_per_event": {str(b): round(statistics.median(v), 2) for b, v in per.items()},
        "runs": {str(b): [round(x, 2) for x in v] for b, v in per.items()},
        "note": "IngestService.publish in process, Kafka replaced by an instant ack",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = run([int(b) for b in args.batches.split(",")], args.seconds, args.runs)
    console.print(result)


if __name__ == "__main__":
    main()
