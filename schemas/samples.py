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
