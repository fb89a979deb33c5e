"""``sealstream audit EVENT_ID`` and ``GET /v1/audit/{event_id}``: everything known about one
event, from the hot store (row, receipt, authorization decision), the cold store (the file
that holds it) and a fresh check of its signature.

Reads go through a ``reader`` (SQL -> rows; ``{db}.`` marks tables), so the same code runs in
the ClickHouse sink process (the embedded engine's owner) and against a server.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from sealstream.integrity import check_entry
from sealstream.keys import HmacKeyring
from sinks.clickhouse.access import quote
from sinks.objects.files import parse_path
from sinks.objects.store import ObjectStore

Reader = Callable[[str], list[dict[str, Any]]]


def _ms(text: str) -> int:
    when = dt.datetime.fromisoformat(text.replace(" ", "T"))
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def locate_cold(store: ObjectStore | None, prefix: str, row: dict[str, Any]) -> dict[str, Any]:
    """The cold file holding the event: its hour directory, then the file whose offset range
    covers the event's Kafka offset."""
    if store is None:
        return {"status": "not_checked"}
    if row.get("route") == "hot":
        return {"status": "not_routed_cold"}
    when = dt.datetime.fromisoformat(str(row["occurred_at"]).replace(" ", "T"))
    hour_dir = (
        f"{prefix.strip('/')}/tenant={row['tenant']}/event_type={row['event_type']}/"
        f"date={when:%Y-%m-%d}/hour={when:%H}"
    )
    offset, partition = int(row["kafka_offset"]), int(row["kafka_partition"])
    for info in store.listing(hour_dir):
        fields = parse_path(info.path)
        if (
            fields is not None
            and int(fields["partition"]) == partition
            and int(fields["first"]) <= offset <= int(fields["last"])
        ):
            return {"status": "stored", "path": info.path, "bytes": info.size}
    return {"status": "not_found", "searched": hour_dir}


def audit_trail(
    reader: Reader,
    event_id: str,
    keys: HmacKeyring,
    store: ObjectStore | None = None,
    prefix: str = "events",
) -> dict[str, Any] | None:
    """The trail of ``event_id``, or None if the hot store has never seen it."""
    rows = reader(f"SELECT row FROM {{db}}.events_by_id WHERE event_id = {quote(event_id)} LIMIT 1")
    if not rows:
        return None
    row: dict[str, Any] = json.loads(rows[0]["row"])
    signed = {
        **row,
        "occurred_at": _ms(row["occurred_at"]),
        "received_at": _ms(row["received_at"]),
        "seq": int(row["seq"]),
    }
    problems = check_entry(signed, keys, None, json.loads(row["payload"]))
    receipts = reader(
        f"SELECT receipt FROM {{db}}.receipts WHERE event_id = {quote(event_id)} "
        f"AND tenant = {quote(str(row['tenant']))} LIMIT 1"
    )
    decisions = reader(
        "SELECT decided_at, subject, action, decision, reason_code, policy_version, client_ip, "
        f"user_agent FROM {{db}}.audit_decisions WHERE tenant = {quote(str(row['tenant']))} "
        f"AND request_id = {quote(str(row['request_id']))} "
        f"AND decided_at BETWEEN toDateTime64({quote(row['received_at'])}, 3, 'UTC') "
        "- INTERVAL 10 MINUTE AND "
        f"toDateTime64({quote(row['received_at'])}, 3, 'UTC') + INTERVAL 10 MINUTE "
        "ORDER BY decided_at LIMIT 100"
    )
    return {
        "event_id": event_id,
        "tenant": row["tenant"],
        "event_type": row["event_type"],
        "occurred_at": row["occurred_at"],
        "received": {
            "at": row["received_at"],
            "producer": row["producer"],
            "request_id": row["request_id"],
            "correlation_id": row["correlation_id"],
            "payload_sha256": row["payload_sha256"],
            "receipt": json.loads(receipts[0]["receipt"]) if receipts else None,
        },
        "authorization": decisions,
        "processing": {
            "classification": row["classification"],
            "route": row["route"],
            "enrichment": row["enrichment"],
            "masked_fields": row["masked_fields"],
            "signed_at": row["signed_at"],
            "key_id": row["key_id"],
            "signature": row["signature"],
            "chain": {
                "chain_id": row["chain_id"],
                "seq": int(row["seq"]),
                "prev_hash": row["prev_hash"],
                "hash": row["hash"],
            },
            "source": {
                "topic": row["source_topic"],
                "partition": row["source_partition"],
                "offset": row["source_offset"],
            },
            "signature_valid": not problems,
            "problems": [f"{kind.value}: {detail}" for kind, detail in problems],
        },
        "stored": {
            "hot": {
                "table": "events",
                "stored_at": row["stored_at"],
                "kafka": {
                    "topic": row["kafka_topic"],
                    "partition": row["kafka_partition"],
                    "offset": row["kafka_offset"],
                },
            },
            "cold": locate_cold(store, prefix, row),
        },
        "dead_letters": "not recorded per event yet (dead letters carry no event id)",
    }
