"""The schemas in ``schemas/avro/`` and the subjects they are registered under.

Event types: every ``<name>.avsc`` not named in ``INFRA_FILES`` (the envelope, the audit and
signed-event records) is the payload record of event type ``<name>``. The schema registered
for it is composed here: ``io.sealstream.events.<Record>Event`` = the envelope's fields +
``payload: <Record>``, so each registered schema is self-contained and decoding by schema id
yields the whole event.

Subject naming: TopicRecordNameStrategy, ``<topic>-<record full name>``
(``events.raw-io.sealstream.events.PageViewEvent``). Several event types share one topic while
each evolves on its own compatibility line; confluent-kafka's serializers use the same rule
(``topic_record_subject_name_strategy``). See docs/schemas.md.

Payload fields may carry ``"pii": true`` (and ``"pii_kind"``): the stream processors mask them
in the hot copy. A payload record may name its ordering key with ``"sealstream.key"``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sealstream.settings import TopicSettings

AVRO_DIR = Path(__file__).resolve().parent / "avro"
ENVELOPE_FILE = "envelope.avsc"
DECISION_FILE = "audit_decision.avsc"
SIGNED_FILE = "signed_event.avsc"
CHECKPOINT_FILE = "audit_checkpoint.avsc"
# Files that are not event types, and the role (TopicSettings) of the topic each registers
# under (None: not registered). Event types register under the raw topic.
INFRA_FILES: dict[str, str | None] = {
    ENVELOPE_FILE: None,
    DECISION_FILE: "decisions",
    SIGNED_FILE: "signed",
    CHECKPOINT_FILE: "checkpoints",
}


def full_name(schema: dict[str, Any]) -> str:
    namespace = schema.get("namespace")
    name = str(schema["name"])
    return name if "." in name or not namespace else f"{namespace}.{name}"


def subject_for(topic: str, schema: dict[str, Any]) -> str:
    """TopicRecordNameStrategy: ``<topic>-<record full name>``."""
    return f"{topic}-{full_name(schema)}"


@dataclass(frozen=True)
class Catalog:
    """The schema files of one directory (the repo's, or a copy a test changed)."""

    directory: Path = AVRO_DIR

    def _load(self, filename: str) -> dict[str, Any]:
        path = self.directory / filename
        try:
            schema = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read schema {path}: {exc}") from exc
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise ValueError(f"{path} must hold one Avro record schema")
        return schema

    def event_types(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.avsc") if p.name not in INFRA_FILES)

    def payload_schema(self, event_type: str) -> dict[str, Any]:
        if event_type not in self.event_types():
            raise KeyError(f"unknown event type {event_type!r}")
        return self._load(f"{event_type}.avsc")

    def envelope_fields(self) -> list[dict[str, Any]]:
        return list(self._load(ENVELOPE_FILE)["fields"])

    def event_schema(self, event_type: str) -> dict[str, Any]:
        """The registered schema of ``event_type``: envelope fields + ``payload``."""
        payload = self.payload_schema(event_type)
        name = full_name(payload)
        namespace, _, short = name.rpartition(".")
        return {
            "type": "record",
            "name": f"{short}Event",
            "namespace": namespace or "io.sealstream.events",
            "doc": f"A {event_type} event as written to events.raw.",  # part of the schema
            "fields": [
                *copy.deepcopy(self.envelope_fields()),
                {"name": "payload", "type": payload},
            ],
        }

    def decision_schema(self) -> dict[str, Any]:
        return self._load(DECISION_FILE)

    def signed_schema(self) -> dict[str, Any]:
        return self._load(SIGNED_FILE)

    def checkpoint_schema(self) -> dict[str, Any]:
        return self._load(CHECKPOINT_FILE)

    def pii_fields(self, event_type: str) -> dict[str, str]:
        """Payload field name -> PII kind, for fields marked ``"pii": true``."""
        return {
            f["name"]: str(f.get("pii_kind", "other"))
            for f in self.payload_schema(event_type)["fields"]
            if f.get("pii") is True
        }

    def key_field(self, event_type: str) -> str | None:
        value = self.payload_schema(event_type).get("sealstream.key")
        return str(value) if value else None

    def subjects(self, topics: TopicSettings | None = None) -> dict[str, dict[str, Any]]:
        """Every subject the repo's schemas register under -> its schema, for the topic names
        of ``topics`` (default: TopicSettings from the environment)."""
        topics = topics or TopicSettings()
        entries = {}
        for event_type in self.event_types():
            schema = self.event_schema(event_type)
            entries[subject_for(topics.raw, schema)] = schema
        for filename, role in INFRA_FILES.items():
            if role is not None and (self.directory / filename).exists():
                schema = self._load(filename)
                entries[subject_for(getattr(topics, role), schema)] = schema
        return entries


@cache
def default_catalog() -> Catalog:
    return Catalog()
