"""Rows of the hot store's tables, built by column name from the records the stages write
(``schemas/records.py``) and the Kafka message that carried them.

Each table's columns are declared once, as a mapping from column name to where its value comes
from: the ``events`` columns are the signed event's fields of the same names (the masked copy
``hot_payload_json`` becomes ``payload``; ``payload_json``, the original, is cold only), plus the
record's Kafka coordinates and size. ``tests/unit/test_records.py`` checks that every field of
the signed event is accounted for.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Message

from schemas.serde import Decoder, UnknownSchemaError, WireFormatError
from sealstream.deadletters import DeadLetterHeaders
from sealstream.tracing import TRACEPARENT, ids_of
from sinks.runner import message_headers, trace_headers

UTC = dt.UTC

Source = Callable[[Mapping[str, Any], Message], Any]


class RowError(ValueError):
    """A record that cannot become a row; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# DateTime64's range: a time outside it cannot be stored (the row goes to the dead letters)
_EARLIEST = dt.datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = dt.datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC)


def _ms(value: Any) -> dt.datetime:
    try:
        if isinstance(value, dt.datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        else:
            moment = dt.datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (OverflowError, OSError) as exc:
        raise RowError("unconvertible", f"time {value!r} is out of range") from exc
    if not _EARLIEST <= moment <= _LATEST:
        raise RowError("unconvertible", f"time {moment.isoformat()} is outside 1900..2299")
    return moment


def _coords(message: Message) -> list[Any]:
    return [message.topic() or "", int(message.partition() or 0), int(message.offset() or 0)]


def _decode(decoder: Decoder, message: Message) -> dict[str, Any]:
    try:
        return decoder.decode(message.value() or b"")[1]
    except UnknownSchemaError as exc:
        raise RowError("unknown_schema", str(exc)) from exc
    except WireFormatError as exc:
        raise RowError("undecodable", str(exc)) from exc


def _trace(message: Message) -> tuple[str, str]:
    return ids_of(trace_headers(message).get(TRACEPARENT))


def text(name: str) -> Source:
    return lambda record, message: str(record[name])


def number(name: str) -> Source:
    return lambda record, message: int(record[name])


def moment(name: str) -> Source:
    return lambda record, message: _ms(record[name])


def optional(name: str) -> Source:
    return lambda record, message: record.get(name)


KAFKA: dict[str, Source] = {
    "kafka_topic": lambda record, message: message.topic() or "",
    "kafka_partition": lambda record, message: int(message.partition() or 0),
    "kafka_offset": lambda record, message: int(message.offset() or 0),
}

# the W3C trace context of the worker's span that signed the record (its headers; not signed)
TRACE: dict[str, Source] = {
    "trace_id": lambda record, message: _trace(message)[0],
    "span_id": lambda record, message: _trace(message)[1],
}

# events: a signed event (schemas.records.SignedEvent) by field name
EVENT_SOURCES: dict[str, Source] = {
    **{name: text(name) for name in ("event_id", "tenant", "event_type")},
    **{name: moment(name) for name in ("occurred_at", "received_at", "signed_at")},
    **{name: text(name) for name in ("producer", "correlation_id", "request_id")},
    "source": optional("source"),
    "classification": text("classification"),
    "route": text("route"),
    "payload": text("hot_payload_json"),  # the masked copy only; the original stays cold
    "masked_fields": lambda record, message: [str(f) for f in record["masked_fields"]],
    **{name: text(name) for name in ("payload_sha256", "content_sha256", "hot_content_sha256")},
    "enrichment": lambda record, message: {str(k): str(v) for k, v in record["enrichment"].items()},
    "schema_id": number("schema_id"),
    "source_topic": text("source_topic"),
    "source_partition": number("source_partition"),
    "source_offset": number("source_offset"),
    "chain_id": text("chain_id"),
    "seq": number("seq"),
    **{name: text(name) for name in ("prev_hash", "hash", "key_id", "signature")},
    **KAFKA,
    "bytes": lambda record, message: len(message.value() or b""),
    **TRACE,
}
# signed event fields the hot store keeps under another name, or not at all
EVENT_FIELDS_ELSEWHERE = {"hot_payload_json": "payload", "payload_json": None}
EVENT_COLUMNS = list(EVENT_SOURCES)

# audit_decisions: a decision (schemas.records.Decision) by field name
DECISION_SOURCES: dict[str, Source] = {
    "decided_at": moment("decided_at"),
    **{name: text(name) for name in ("subject", "tenant", "event_tenant")},
    "event_type": lambda record, message: str(record.get("event_type") or ""),
    **{
        name: text(name)
        for name in (
            "action",
            "decision",
            "reason_code",
            "policy_version",
            "request_id",
            "correlation_id",
        )
    },
    **{name: optional(name) for name in ("client_ip", "user_agent", "detail", "client_cert")},
    **KAFKA,
}
DECISION_COLUMNS = list(DECISION_SOURCES)

# checkpoints: a signed chain head (schemas.records.Checkpoint) by field name
CHECKPOINT_SOURCES: dict[str, Source] = {
    "chain_id": text("chain_id"),
    "seq": number("seq"),
    "head_hash": text("head_hash"),
    "created_at": moment("created_at"),
    "key_id": text("key_id"),
    "signature": text("signature"),
    **KAFKA,
}
CHECKPOINT_COLUMNS = list(CHECKPOINT_SOURCES)

DEAD_LETTER_COLUMNS = [
    "failed_at", "reason", "stage", "error_class", "message", "tenant", "event_type",
    "source_topic", "source_partition", "source_offset", "attempts", "bytes", "kafka_topic",
    "kafka_partition", "kafka_offset", "event_id",
]  # fmt: skip
REPLAY_COLUMNS = [
    "marker", "status", "replay_id", "by", "at", "event_id", "target", "kafka_topic",
    "kafka_partition", "kafka_offset",
]  # fmt: skip
RECEIPT_COLUMNS = [
    "event_id",
    "tenant",
    "receipt",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
]


def _row(sources: dict[str, Source], record: Mapping[str, Any], message: Message) -> list[Any]:
    return [source(record, message) for source in sources.values()]


def event_row(record: Mapping[str, Any], message: Message) -> list[Any] | None:
    """The ``events`` row of a signed event; None for events routed to cold storage only."""
    if record["route"] == "cold":
        return None
    return _row(EVENT_SOURCES, record, message)


def decision_row(record: Mapping[str, Any], message: Message) -> list[Any]:
    return _row(DECISION_SOURCES, record, message)


def checkpoint_row(record: Mapping[str, Any], message: Message) -> list[Any]:
    return _row(CHECKPOINT_SOURCES, record, message)


def dead_letter_row(message: Message) -> list[Any]:
    """A dead letter's row, from its error headers (its value may be undecodable)."""
    h = {k: v.decode("utf-8", "replace") for k, v in message_headers(message).items()}
    error = DeadLetterHeaders.from_headers(h)
    _, timestamp_ms = message.timestamp()
    return [
        _ms(error.last_failure_ms or timestamp_ms or 0),
        error.reason,
        error.stage,
        error.error_class,
        error.message,
        h.get("tenant", ""),
        h.get("event_type", ""),
        error.topic,
        error.partition,
        error.offset,
        error.attempts,
        len(message.value() or b""),
        *_coords(message),
        h.get("event_id", ""),  # set by the gateway on raw events; absent on poison
    ]


def replay_row(message: Message) -> list[Any] | None:
    """A dead-letter replay/purge marker (JSON on the compacted ``dlq.replays`` topic, keyed by
    the dead letter's coordinates; streams/dlq.py writes them)."""
    value, key = message.value(), message.key()
    if not value or not key:
        return None
    try:
        marker = json.loads(value)
        row = [
            key.decode(),
            str(marker["status"]),
            str(marker.get("replay_id") or ""),
            str(marker.get("by") or ""),
            _ms(int(marker["at_ms"])),
            str(marker.get("event_id") or ""),
            marker.get("target"),
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise RowError("unconvertible", f"replay marker is not the expected JSON: {exc}") from exc
    return [*row, *_coords(message)]


def receipt_row(message: Message) -> list[Any] | None:
    """A gateway receipt (JSON on the compacted ``receipts`` topic); tombstones are skipped."""
    value = message.value()
    if not value:
        return None
    try:
        receipt = json.loads(value)
        event_id, tenant = str(receipt["event_id"]), str(receipt["tenant"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RowError(
            "unconvertible", f"receipt is not JSON with event_id and tenant: {exc}"
        ) from exc
    return [event_id, tenant, value.decode(), *_coords(message)]
