"""``sealstream audit EVENT_ID`` and ``GET /v1/audit/{event_id}``: everything known about one
event, from the hot store (row, receipt, authorization decision), the cold store (the file
that holds it) and a fresh check of its signature.

Two sources answer the same questions: ``StoreSource`` reads ClickHouse through a ``reader``
(SQL -> rows; ``{db}.`` marks tables), so the same code runs in the ClickHouse sink process
(the embedded engine's owner) and against a server; ``IndexSource`` reads the sink's audit
index (sinks/clickhouse/trail_index.py), the hot path: two primary-key reads instead of five
ClickHouse queries.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, Protocol

from sealstream.integrity import HOT_CONTENT_HASH, check_entry
from sealstream.keys import HmacKeyring
from sinks.clickhouse.access import quote
from sinks.clickhouse.trail_index import TrailIndex, as_text, request_key
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


class TrailSource(Protocol):
    name: str

    def event(self, event_id: str) -> dict[str, Any] | None: ...

    def receipt(self, event_id: str, tenant: str) -> dict[str, Any] | None: ...

    def decisions(self, tenant: str, request_id: str, received_at: str) -> list[dict[str, Any]]: ...

    def dead_letters(self, event_id: str) -> list[dict[str, Any]]: ...

    def replays(self, event_id: str) -> list[dict[str, Any]]: ...


DECISION_FIELDS = (
    "decided_at", "subject", "action", "decision", "reason_code", "policy_version", "client_ip",
    "user_agent", "client_cert",
)  # fmt: skip
DEAD_LETTER_FIELDS = (
    "failed_at", "reason", "stage", "error_class", "message", "attempts", "source_topic",
    "source_partition", "source_offset", "kafka_topic", "kafka_partition", "kafka_offset",
)  # fmt: skip
REPLAY_FIELDS = ("marker", "status", "replay_id", "by", "at", "target")
DECISION_WINDOW_MS = 10 * 60 * 1000  # decisions of the request within 10 minutes of receipt


class StoreSource:
    """ClickHouse itself (the store of record): one query per part of the trail."""

    name = "clickhouse"

    def __init__(self, reader: Reader) -> None:
        self._read = reader

    def read(self, sql: str) -> list[dict[str, Any]]:
        return [{k: as_text(v) for k, v in row.items()} for row in self._read(sql)]

    def event(self, event_id: str) -> dict[str, Any] | None:
        rows = self.read(
            f"SELECT row FROM {{db}}.events_by_id WHERE event_id = {quote(event_id)} LIMIT 1"
        )
        return json.loads(rows[0]["row"]) if rows else None

    def receipt(self, event_id: str, tenant: str) -> dict[str, Any] | None:
        rows = self.read(
            f"SELECT receipt FROM {{db}}.receipts WHERE event_id = {quote(event_id)} "
            f"AND tenant = {quote(tenant)} LIMIT 1"
        )
        return json.loads(rows[0]["receipt"]) if rows else None

    def decisions(self, tenant: str, request_id: str, received_at: str) -> list[dict[str, Any]]:
        at = f"toDateTime64({quote(received_at)}, 3, 'UTC')"
        return self.read(
            f"SELECT {', '.join(DECISION_FIELDS)} FROM {{db}}.audit_decisions "
            f"WHERE tenant = {quote(tenant)} AND request_id = {quote(request_id)} "
            f"AND decided_at BETWEEN {at} - INTERVAL 10 MINUTE AND {at} + INTERVAL 10 MINUTE "
            "ORDER BY decided_at LIMIT 100"
        )

    def dead_letters(self, event_id: str) -> list[dict[str, Any]]:
        return self.read(
            f"SELECT {', '.join(DEAD_LETTER_FIELDS)} FROM {{db}}.dead_letters "
            f"WHERE event_id = {quote(event_id)} ORDER BY failed_at LIMIT 100"
        )

    def replays(self, event_id: str) -> list[dict[str, Any]]:
        return self.read(
            f"SELECT {', '.join(REPLAY_FIELDS)} FROM {{db}}.dlq_replays FINAL "
            f"WHERE event_id = {quote(event_id)} ORDER BY at LIMIT 100"
        )


class IndexSource:
    """The ClickHouse sink's audit index: the event's entries in one read, the request's
    decisions in another."""

    name = "audit_index"

    def __init__(self, index: TrailIndex) -> None:
        self.index = index
        self._cached: tuple[str, list[tuple[str, str, dict[str, Any]]]] | None = None

    def _entries(self, event_id: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
        if self._cached is None or self._cached[0] != event_id:
            self._cached = (event_id, self.index.get(event_id))
        return [(ident, body) for k, ident, body in self._cached[1] if k == kind]

    def event(self, event_id: str) -> dict[str, Any] | None:
        found = self._entries(event_id, "event")
        return found[0][1] if found else None

    def receipt(self, event_id: str, tenant: str) -> dict[str, Any] | None:
        for ident, body in self._entries(event_id, "receipt"):
            if ident == tenant:
                return dict(json.loads(body["receipt"]))
        return None

    def decisions(self, tenant: str, request_id: str, received_at: str) -> list[dict[str, Any]]:
        at = _ms(received_at)
        found = [
            body
            for kind, _, body in self.index.get(request_key(tenant, request_id))
            if kind == "decision" and abs(_ms(body["decided_at"]) - at) <= DECISION_WINDOW_MS
        ]
        found.sort(key=lambda body: str(body["decided_at"]))
        return [{k: body.get(k) for k in DECISION_FIELDS} for body in found[:100]]

    def dead_letters(self, event_id: str) -> list[dict[str, Any]]:
        found = sorted((b for _, b in self._entries(event_id, "dead_letter")), key=_failed_at)
        return [{k: body.get(k) for k in DEAD_LETTER_FIELDS} for body in found]

    def replays(self, event_id: str) -> list[dict[str, Any]]:
        found = sorted((b for _, b in self._entries(event_id, "replay")), key=lambda b: b["at"])
        return [{k: body.get(k) for k in REPLAY_FIELDS} for body in found]


def _failed_at(body: dict[str, Any]) -> str:
    return str(body["failed_at"])


def source_for(reader: Reader, index: TrailIndex | None) -> TrailSource:
    """The index when it is complete (built and kept by the sink), else ClickHouse."""
    if index is not None and index.complete:
        return IndexSource(index)
    return StoreSource(reader)


def _dead_letter_history(source: TrailSource, event_id: str) -> list[dict[str, Any]]:
    """Each time the event was dead-lettered, with what operators did about it (replay or
    purge markers of that dead letter)."""
    replays: dict[str, list[dict[str, Any]]] = {}
    for marker in source.replays(event_id):
        replays.setdefault(str(marker["marker"]), []).append(
            {k: marker[k] for k in ("status", "replay_id", "by", "at", "target")}
        )
    history = []
    for letter in source.dead_letters(event_id):
        where = f"{letter['kafka_topic']}/{letter['kafka_partition']}/{letter['kafka_offset']}"
        history.append(
            {
                "failed_at": letter["failed_at"],
                "reason": letter["reason"],
                "stage": letter["stage"],
                "error_class": letter["error_class"],
                "message": letter["message"],
                "attempts": int(letter["attempts"]),
                "source": {
                    "topic": letter["source_topic"],
                    "partition": int(letter["source_partition"]),
                    "offset": int(letter["source_offset"]),
                },
                "dead_letter": {
                    "topic": letter["kafka_topic"],
                    "partition": int(letter["kafka_partition"]),
                    "offset": int(letter["kafka_offset"]),
                },
                "operator_actions": replays.get(where, []),
            }
        )
    return history


def audit_trail(
    source: TrailSource,
    event_id: str,
    keys: HmacKeyring,
    store: ObjectStore | None = None,
    prefix: str = "events",
) -> dict[str, Any] | None:
    """The trail of ``event_id``, or None if the hot store has never seen it."""
    row = source.event(event_id)
    if row is None:
        return None
    signed = {
        **row,
        "occurred_at": _ms(row["occurred_at"]),
        "received_at": _ms(row["received_at"]),
        "seq": int(row["seq"]),
    }
    # the stored text is hashed as it is: a payload edited into anything is a finding
    problems = check_entry(signed, keys, stored_copies={HOT_CONTENT_HASH: row["payload"]})
    tenant = str(row["tenant"])
    return {
        "event_id": event_id,
        "tenant": row["tenant"],
        "event_type": row["event_type"],
        "occurred_at": row["occurred_at"],
        "read_from": source.name,
        "received": {
            "at": row["received_at"],
            "producer": row["producer"],
            "request_id": row["request_id"],
            "correlation_id": row["correlation_id"],
            "payload_sha256": row["payload_sha256"],
            "receipt": source.receipt(event_id, tenant),
        },
        "authorization": source.decisions(tenant, str(row["request_id"]), row["received_at"]),
        # W3C trace context: its trace, and the worker's span that signed it (empty: stored
        # before trace context was kept, or never traced). Headers, not signed content.
        "trace": {"trace_id": row.get("trace_id", ""), "span_id": row.get("span_id", "")},
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
                "partition": int(row["source_partition"]),
                "offset": int(row["source_offset"]),
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
                    "partition": int(row["kafka_partition"]),
                    "offset": int(row["kafka_offset"]),
                },
            },
            "cold": locate_cold(store, prefix, row),
        },
        "dead_letters": _dead_letter_history(source, event_id),
    }
