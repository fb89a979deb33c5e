"""The records the stages hand each other through Kafka, as Python types: one ``TypedDict``
per ``.avsc`` shape, their fields equal to the schema's (``tests/unit/test_records.py`` says
so), so that code building or reading a record is checked by mypy against the contract.

Timestamps are what fastavro hands back for ``timestamp-millis``: aware datetimes on reading,
datetimes or integer Unix milliseconds on writing (``Millis``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NotRequired, TypedDict

Millis = dt.datetime | int


class RawEvent(TypedDict):
    """An event as the gateway writes it to ``events.raw`` (``envelope.avsc`` + payload)."""

    event_id: str
    tenant: str
    event_type: str
    occurred_at: Millis
    received_at: Millis
    producer: str
    correlation_id: str
    request_id: str
    source: str | None
    payload_sha256: str
    payload: dict[str, Any]


class SignedEvent(TypedDict):
    """An event as the workers write it to ``events.signed`` (``signed_event.avsc``): the
    envelope, both payload copies, the enrichment, and its place in the partition's chain."""

    event_id: str
    tenant: str
    event_type: str
    occurred_at: int
    received_at: int
    producer: str
    correlation_id: str
    request_id: str
    source: str | None
    classification: str
    route: str
    payload_json: str
    hot_payload_json: str
    masked_fields: list[str]
    payload_sha256: str
    content_sha256: str
    hot_content_sha256: str
    enrichment: dict[str, str]
    schema_id: int
    source_topic: str
    source_partition: int
    source_offset: int
    chain_id: str
    seq: int
    prev_hash: str
    hash: str
    key_id: str
    signature: str
    signed_at: int


class Decision(TypedDict):
    """An authorization or operator decision on ``audit.decisions`` (``audit_decision.avsc``)."""

    subject: str
    tenant: str
    event_tenant: str
    event_type: str | None
    action: str
    decision: str  # ALLOW or DENY
    reason_code: str
    policy_version: str
    request_id: str
    correlation_id: str
    decided_at: Millis
    client_ip: str | None
    user_agent: str | None
    detail: str | None
    client_cert: NotRequired[str | None]  # a mutual-TLS client certificate's subject (absent: none)


class Checkpoint(TypedDict):
    """A signed chain head on ``audit.checkpoints`` (``audit_checkpoint.avsc``)."""

    chain_id: str
    seq: int
    head_hash: str
    created_at: int
    key_id: str
    signature: str


def field_names(record: type) -> tuple[str, ...]:
    """A record type's fields, in declaration order (the schema's order)."""
    return tuple(record.__annotations__)
