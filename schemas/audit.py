"""Audit records for actions outside the ingest path (analyst queries, operator commands),
in the project's own schemas (here, above the ground floor, because they encode with them).

They use the gateway's ``Decision`` schema on ``audit.decisions`` (action, verdict, reason code,
and a JSON ``detail``), so one topic and one ClickHouse table hold the whole trail.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
import uuid
from typing import Any

from confluent_kafka import Producer

from schemas.catalog import Catalog, subject_for
from schemas.serde import Encoder
from sealstream.settings import KafkaSettings, RegistrySettings, TopicSettings


def decision_encoder(registry: RegistrySettings) -> Encoder:
    """The registered ``Decision`` schema (registered by ``schemas register``)."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    schema = Catalog().decision_schema()
    with SchemaRegistryClient(registry.client_config()) as client:
        found = client.lookup_schema(
            subject_for(TopicSettings().decisions, schema), Schema(json.dumps(schema), "AVRO")
        )
    return Encoder(int(found.schema_id), schema)


def local_operator() -> str:
    """Who runs a command on this machine, for audit records without a token."""
    return f"local:{getpass.getuser()}@{socket.gethostname()}"


class AuditLog:
    """Write audit records; ``record`` returns once Kafka acknowledged (acks=all)."""

    def __init__(
        self, kafka: KafkaSettings, registry: RegistrySettings, topic: str | None = None
    ) -> None:
        self.topic = topic or TopicSettings().decisions
        self.encoder = decision_encoder(registry)
        self.producer = Producer(kafka.client_config(enable_idempotence=True, acks="all"))

    def record(
        self,
        *,
        subject: str,
        tenant: str,
        action: str,
        allow: bool,
        reason: str,
        detail: dict[str, Any],
        policy_version: str = "-",
        event_type: str | None = None,
        request_id: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        request_id = request_id or str(uuid.uuid4())
        value = self.encoder.encode(
            {
                "subject": subject,
                "tenant": tenant,
                "event_tenant": tenant,
                "event_type": event_type,
                "action": action,
                "decision": "ALLOW" if allow else "DENY",
                "reason_code": reason,
                "policy_version": policy_version,
                "request_id": request_id,
                "correlation_id": request_id,
                "decided_at": dt.datetime.now(dt.UTC),
                "client_ip": client_ip,
                "user_agent": user_agent,
                "detail": json.dumps(detail, sort_keys=True, default=str),
            }
        )
        self.producer.produce(self.topic, value, tenant.encode())
        if self.producer.flush(timeout_s):
            raise RuntimeError(f"audit record for {action} not acknowledged by Kafka")

    def close(self) -> None:
        self.producer.flush(10)


OPS_TENANT = "sealstream"


def publish_operator_action(
    kafka: KafkaSettings,
    registry: RegistrySettings,
    raw_topic: str,
    *,
    actor: str,
    action: str,
    ok: bool,
    detail: dict[str, Any],
    tenant: str = OPS_TENANT,
    timeout_s: float = 10.0,
) -> str:
    """Publish an ``operator_action`` event to the raw topic, where the processors enrich,
    sign and hash-chain it like any other event; returns its event id."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from sealstream.integrity import canonical_json, payload_hash

    catalog = Catalog()
    schema = catalog.event_schema("operator_action")
    with SchemaRegistryClient(registry.client_config()) as client:
        found = client.lookup_schema(
            subject_for(TopicSettings().raw, schema),  # event schemas register under the raw topic
            Schema(json.dumps(schema), "AVRO"),
        )
    payload = {
        "action": action,
        "actor": actor,
        "ok": ok,
        "detail_json": canonical_json(detail).decode(),
    }
    now = dt.datetime.now(dt.UTC)
    event_id = str(uuid.uuid4())
    record = {
        "event_id": event_id,
        "tenant": tenant,
        "event_type": "operator_action",
        "occurred_at": now,
        "received_at": now,
        "producer": actor,
        "correlation_id": event_id,
        "request_id": event_id,
        "source": socket.gethostname(),
        "payload_sha256": payload_hash(payload),
        "payload": payload,
    }
    producer = Producer(kafka.client_config(enable_idempotence=True, acks="all"))
    producer.produce(
        raw_topic,
        Encoder(int(found.schema_id), schema).encode(record),
        f"{tenant}:{actor}".encode(),
        headers=[
            ("tenant", tenant.encode()),
            ("event_type", b"operator_action"),
            ("correlation_id", event_id.encode()),
        ],
    )
    if producer.flush(timeout_s):
        raise RuntimeError(f"operator action {action} not acknowledged by Kafka")
    return event_id
