"""The gateway's view of the event schemas: for each event type the registered schema id,
the parsed event schema, the payload schema to validate against, and its ordering key.

Loaded at start-up by looking each catalog schema up in the registry (the gateway never
registers schemas: that is a deploy step, ``sealstream schemas register``). An event type whose
schema is not registered is not offered, and ``/readyz`` says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from schemas.catalog import Catalog, subject_for
from schemas.serde import Encoder, parse
from sealstream.settings import TopicSettings


@dataclass(frozen=True)
class EventTypeInfo:
    name: str
    subject: str
    schema_id: int
    event_parsed: Any
    payload_schema: dict[str, Any]
    payload_parsed: Any
    key_field: str | None
    pii_fields: int = 0  # masked in the hot copy: the signed record grows by a pseudonym each

    @cached_property
    def wire_header(self) -> bytes:
        """Magic byte and schema id: the first five bytes of every record of this type."""
        return b"\x00" + self.schema_id.to_bytes(4, "big")

    @cached_property
    def schema_id_header(self) -> bytes:
        """The ``schema_id`` Kafka header value."""
        return str(self.schema_id).encode()

    def key_for(self, datum: dict[str, Any]) -> str | None:
        if self.key_field is None:
            return None
        value = datum.get(self.key_field)
        return None if value is None else str(value)


class SchemaBook:
    def __init__(self, types: dict[str, EventTypeInfo], decision_encoder: Encoder) -> None:
        self._types = types
        self._decision = decision_encoder

    @classmethod
    def load(cls, client: Any, catalog: Catalog, events_topic: str) -> SchemaBook:
        """Look every catalog schema up in the registry (``client``: SchemaRegistryClient)."""
        from confluent_kafka.schema_registry import Schema

        types: dict[str, EventTypeInfo] = {}
        for event_type in catalog.event_types():
            schema = catalog.event_schema(event_type)
            subject = subject_for(events_topic, schema)
            found = client.lookup_schema(subject, Schema(json.dumps(schema), "AVRO"))
            payload = catalog.payload_schema(event_type)
            types[event_type] = EventTypeInfo(
                name=event_type,
                subject=subject,
                schema_id=int(found.schema_id),
                event_parsed=parse(schema),
                payload_schema=payload,
                payload_parsed=parse(payload),
                key_field=catalog.key_field(event_type),
                pii_fields=len(catalog.pii_fields(event_type)),
            )
        decision = catalog.decision_schema()
        found = client.lookup_schema(
            subject_for(TopicSettings().decisions, decision), Schema(json.dumps(decision), "AVRO")
        )
        return cls(types, Encoder(int(found.schema_id), decision))

    def get(self, event_type: str) -> EventTypeInfo | None:
        return self._types.get(event_type)

    def names(self) -> list[str]:
        return sorted(self._types)

    def encode_decision(self, record: dict[str, Any]) -> bytes:
        return self._decision.encode(record)
