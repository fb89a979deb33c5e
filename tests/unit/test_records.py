"""The contracts are said once: the typed records equal the ``.avsc`` files field for field, the
dead-letter headers round-trip, and every topic name comes from TopicSettings."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.catalog import Catalog
from schemas.records import Checkpoint, Decision, RawEvent, SignedEvent, field_names
from sealstream.deadletters import DeadLetterHeaders, source_headers
from sealstream.settings import GatewaySettings, SinkSettings, TopicSettings, WorkerSettings
from sealstream.topics import pipeline_topics

CATALOG = Catalog()


def names(schema: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f["name"] for f in schema["fields"])


@pytest.mark.parametrize(
    ("record", "schema"),
    [
        (SignedEvent, CATALOG.signed_schema()),
        (Decision, CATALOG.decision_schema()),
        (Checkpoint, CATALOG.checkpoint_schema()),
    ],
    ids=["signed", "decision", "checkpoint"],
)
def test_each_typed_record_has_exactly_its_schemas_fields(
    record: type, schema: dict[str, Any]
) -> None:
    assert field_names(record) == names(schema)


def test_the_raw_event_is_the_envelope_and_its_payload_for_every_event_type() -> None:
    envelope = tuple(f["name"] for f in CATALOG.envelope_fields())
    assert field_names(RawEvent) == (*envelope, "payload")
    for event_type in CATALOG.event_types():
        assert names(CATALOG.event_schema(event_type)) == (*envelope, "payload"), event_type


def test_dead_letter_headers_round_trip_and_survive_anything() -> None:
    written = DeadLetterHeaders(
        reason="unknown_schema", stage="decode", message="x" * 2000, error_class="PoisonMessage",
        topic="events.raw", partition=3, offset=41, attempts=2,
        first_failure_ms=1_700_000_000_000, last_failure_ms=1_700_000_000_500,
    )  # fmt: skip
    headers = dict(written.to_headers())
    assert all(name.startswith("dlq.") for name in headers)
    read = DeadLetterHeaders.from_headers(headers)
    assert read == DeadLetterHeaders(**{**written.__dict__, "message": "x" * 1000})
    hostile = DeadLetterHeaders.from_headers(
        {"dlq.partition": b"-7", "dlq.offset": "lots", "dlq.attempts": "999999", "x": None}
    )
    assert (hostile.reason, hostile.stage) == ("unknown", "unknown")
    assert (hostile.partition, hostile.offset, hostile.attempts) == (0, 0, 65535)
    kept = source_headers([("tenant", b"acme"), ("dlq.reason", b"r"), ("event_id", "e")])
    assert kept == [("tenant", b"acme"), ("event_id", b"e")]


def test_renaming_a_topic_renames_it_for_creation_registration_and_every_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALSTREAM_TOPIC_RAW", "acme.raw")
    monkeypatch.setenv("SEALSTREAM_TOPIC_SIGNED", "acme.signed")
    assert {t.name for t in pipeline_topics()} >= {"acme.raw", "acme.signed"}
    assert "events.raw" not in {t.name for t in pipeline_topics()}
    subjects = set(CATALOG.subjects())
    assert "acme.raw-io.sealstream.events.PaymentEvent" in subjects
    assert "acme.signed-io.sealstream.signed.SignedEvent" in subjects
    assert GatewaySettings().raw_topic == WorkerSettings().raw_topic == "acme.raw"
    assert WorkerSettings().signed_topic == SinkSettings().signed_topic == "acme.signed"
    assert TopicSettings().decisions == SinkSettings().decisions_topic == "audit.decisions"
    monkeypatch.setenv("SEALSTREAM_WORKER_RAW_TOPIC", "only-the-worker")  # an override
    assert (WorkerSettings().raw_topic, GatewaySettings().raw_topic) == (
        "only-the-worker", "acme.raw",
    )  # fmt: skip


def test_hot_store_columns_are_the_records_fields_by_name() -> None:
    from sinks.clickhouse.rows import (
        CHECKPOINT_COLUMNS,
        DECISION_COLUMNS,
        EVENT_COLUMNS,
        EVENT_FIELDS_ELSEWHERE,
        KAFKA,
        TRACE,
    )

    for record, columns, elsewhere in (
        (SignedEvent, EVENT_COLUMNS, EVENT_FIELDS_ELSEWHERE),
        (Decision, DECISION_COLUMNS, {}),
        (Checkpoint, CHECKPOINT_COLUMNS, {}),
    ):
        fields = set(field_names(record))
        unaccounted = fields - set(columns) - set(elsewhere)
        assert unaccounted == set(), (record.__name__, unaccounted)
        known = {*KAFKA, "bytes", *filter(None, elsewhere.values())}
        known |= set(TRACE) if record is SignedEvent else set()
        extra = set(columns) - fields - known
        assert extra == set(), (record.__name__, extra)
