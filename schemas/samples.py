"""Sample events that match the repo's schemas, for tests, benchmarks and demos."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any


def payment_event(
    i: int, tenant: str, now: dt.datetime, event_id: str | None = None
) -> dict[str, Any]:
    """A complete raw payment event (envelope + payload) as the gateway writes it."""
    event_id = event_id or str(uuid.uuid4())
    return {
        "event_id": event_id,
        "tenant": tenant,
        "event_type": "payment",
        "occurred_at": now,
        "received_at": now,
        "producer": "sample",
        "correlation_id": f"c-{event_id}",
        "request_id": "r",
        "source": None,
        "payload_sha256": "00" * 32,
        "payload": {
            "payment_id": f"p{i}",
            "account_id": f"a{i % 5}",
            "amount_minor": i,
            "currency": "EUR",
            "status": "CAPTURED",
            "method": "CARD",
            "card_last4": "4242",
            "payer_email": f"u{i}@example.test",
            "merchant_id": "m",
        },
    }


def signed_chain(
    count: int,
    chain_id: str,
    keys: Any,
    *,
    tenants: tuple[str, ...] = ("acme", "globex"),
    event_types: tuple[str, ...] = ("payment", "page_view"),
    routes: tuple[str, ...] = ("both",),
    start_ms: int | None = None,
    head: Any = None,
    ages_ms: tuple[int, ...] = (0,),
) -> list[dict[str, Any]]:
    """``count`` signed events (the processors' output records) forming one valid hash chain.

    Tenants, event types, routes and ``ages_ms`` (how long before its arrival an event
    occurred: late arrivals) cycle with the index, so a test knows exactly which records each
    store should get. ``keys`` is a :class:`sealstream.keys.HmacKeyring`.
    """
    import json

    from sealstream.integrity import ChainHead, payload_hash, sign

    head = head or ChainHead()
    base = start_ms if start_ms is not None else int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    records = []
    for i in range(count):
        payload = {"n": i, "email": f"user{i}@example.test"}
        hot = {"n": i, "email": f"pii:email:{i:016x}"}
        record: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            "tenant": tenants[i % len(tenants)],
            "event_type": event_types[i % len(event_types)],
            "occurred_at": base + i - ages_ms[i % len(ages_ms)],
            "received_at": base + i + 5,
            "producer": "sample",
            "correlation_id": f"c{i}",
            "request_id": f"r{i}",
            "source": None,
            "classification": "internal",
            "route": routes[i % len(routes)],
            "payload_json": json.dumps(payload, sort_keys=True, separators=(",", ":")),
            "hot_payload_json": json.dumps(hot, sort_keys=True, separators=(",", ":")),
            "masked_fields": ["email"],
            "payload_sha256": payload_hash(payload),
            "content_sha256": payload_hash(payload),
            "hot_content_sha256": payload_hash(hot),
            "enrichment": {"region": "eu"},
            "schema_id": 1,
            "source_topic": "events.raw",
            "source_partition": 0,
            "source_offset": i,
            "chain_id": chain_id,
            "signed_at": base + i + 9,
        }
        head = sign(record, keys, head)
        records.append(record)
    return records
