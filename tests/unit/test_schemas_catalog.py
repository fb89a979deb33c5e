"""The schema catalog: event types, composed event schemas, subjects, PII and key fields."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import fastavro
import pytest

from schemas.catalog import Catalog, default_catalog, subject_for

NOW = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def page_view_event() -> dict[str, Any]:
    return {
        "event_id": "0193a0b2-0000-7000-8000-000000000001",
        "tenant": "acme",
        "event_type": "page_view",
        "occurred_at": NOW,
        "received_at": NOW,
        "producer": "svc-web",
        "correlation_id": "c-1",
        "request_id": "r-1",
        "source": None,
        "payload_sha256": "00" * 32,
        "payload": {
            "session_id": "s-1",
            "user_id": "u-1",
            "url": "https://example.test/",
            "referrer": None,
            "user_agent": None,
            "client_ip": "203.0.113.9",
            "duration_ms": 1200,
        },
    }


def test_catalog_lists_types_and_composes_self_contained_schemas() -> None:
    catalog = default_catalog()
    assert catalog.event_types() == ["login", "operator_action", "page_view", "payment"]
    schema = catalog.event_schema("payment")
    assert schema["name"] == "PaymentEvent" and schema["namespace"] == "io.sealstream.events"
    names = [f["name"] for f in schema["fields"]]
    assert names[0] == "event_id" and names[-1] == "payload"
    fastavro.parse_schema(schema)  # valid on its own: no references to resolve
    for event_type in catalog.event_types():
        fastavro.parse_schema(catalog.event_schema(event_type))


def test_subjects_use_topic_record_name_strategy() -> None:
    subjects = default_catalog().subjects()
    assert "events.raw-io.sealstream.events.PageViewEvent" in subjects
    assert "audit.decisions-io.sealstream.audit.Decision" in subjects
    assert subject_for("t", {"name": "X", "namespace": "a.b"}) == "t-a.b.X"


def test_pii_and_key_fields_come_from_the_schema() -> None:
    catalog = default_catalog()
    assert catalog.pii_fields("payment") == {"card_last4": "card", "payer_email": "email"}
    assert catalog.pii_fields("page_view") == {"user_id": "user_id", "client_ip": "ip"}
    assert catalog.key_field("payment") == "account_id"
    with pytest.raises(KeyError):
        catalog.payload_schema("envelope")


def test_catalog_over_another_directory(tmp_path: Any) -> None:
    (tmp_path / "envelope.avsc").write_text(
        (default_catalog().directory / "envelope.avsc").read_text()
    )
    (tmp_path / "thing.avsc").write_text(
        json.dumps({"type": "record", "name": "Thing", "fields": [{"name": "a", "type": "int"}]})
    )
    (tmp_path / "audit_decision.avsc").write_text(
        (default_catalog().directory / "audit_decision.avsc").read_text()
    )
    catalog = Catalog(tmp_path)
    assert catalog.event_types() == ["thing"]
    assert catalog.event_schema("thing")["name"] == "ThingEvent"
