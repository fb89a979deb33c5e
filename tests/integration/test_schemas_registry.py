"""The repo's schemas against the real registry and broker: register, evolve, check, and an
Avro round trip through Kafka with confluent-kafka's own serializers."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    topic_record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from typer.testing import CliRunner

from ops.cli import app
from schemas.catalog import AVRO_DIR, Catalog, subject_for
from schemas.serde import Decoder, Encoder, registry_lookup
from tests.unit.test_schemas_catalog import page_view_event

pytestmark = pytest.mark.integration


@pytest.fixture
def avro_dir(tmp_path: Path) -> Path:
    """A private copy of schemas/avro whose event type has a unique name (own subjects)."""
    target = tmp_path / "avro"
    target.mkdir()
    for name in ("envelope.avsc", "audit_decision.avsc"):
        shutil.copy(AVRO_DIR / name, target / name)
    schema = json.loads((AVRO_DIR / "page_view.avsc").read_text())
    schema["name"] = f"PageView{uuid.uuid4().hex[:8]}"
    (target / "page_view.avsc").write_text(json.dumps(schema))
    return target


def _edit_page_view(directory: Path, change: Any) -> None:
    path = directory / "page_view.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(autouse=True)
def _operator_credential(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI run here is an operator's: it registers with the stack's credential."""
    operator = stack.registry_settings().basic_auth_file
    if operator is not None:
        monkeypatch.setenv("SEALSTREAM_REGISTRY_BASIC_AUTH_FILE", str(operator))


def test_register_twice_then_evolve_and_check(stack: Any, avro_dir: Path) -> None:
    url = stack.registry_url
    first = _cli("schemas", "register", "--registry-url", url, "--dir", str(avro_dir), "--json")
    assert first.exit_code == 0, first.output
    subject = subject_for("events.raw", Catalog(avro_dir).event_schema("page_view"))
    rows = {r["subject"]: r for r in json.loads(first.output)}
    assert rows[subject]["status"] == "registered"

    second = _cli("schemas", "register", "--registry-url", url, "--dir", str(avro_dir), "--json")
    assert second.exit_code == 0
    assert {r["status"] for r in json.loads(second.output)} == {"unchanged"}

    # v2: a new optional field with a default passes BACKWARD and registers as version 2.
    _edit_page_view(
        avro_dir,
        lambda s: s["fields"].append(
            {"name": "screen", "type": ["null", "string"], "default": None}
        ),
    )
    assert _cli("schemas", "check", "--registry-url", url, "--dir", str(avro_dir)).exit_code == 0
    third = _cli("schemas", "register", "--registry-url", url, "--dir", str(avro_dir), "--json")
    rows = {r["subject"]: r for r in json.loads(third.output)}
    assert rows[subject]["status"] == "registered" and rows[subject]["version"] == 2

    # A breaking change: a new required field without default.
    _edit_page_view(avro_dir, lambda s: s["fields"].append({"name": "tab", "type": "int"}))
    check = _cli("schemas", "check", "--registry-url", url, "--dir", str(avro_dir), "--json")
    assert check.exit_code == 1
    rows = {r["subject"]: r for r in json.loads(check.output)}
    assert rows[subject]["status"] == "incompatible" and "tab" in rows[subject]["detail"]
    with (
        SchemaRegistryClient(stack.registry_config()) as client,
        pytest.raises(SchemaRegistryError) as info,
    ):
        client.register_schema(
            subject, Schema(json.dumps(Catalog(avro_dir).event_schema("page_view")), "AVRO")
        )
    assert info.value.http_status_code == 409
    refused = _cli("schemas", "register", "--registry-url", url, "--dir", str(avro_dir))
    assert refused.exit_code == 1


def test_check_reports_unreachable_registry(avro_dir: Path) -> None:
    result = _cli(
        "schemas", "check", "--registry-url", "http://127.0.0.1:9", "--dir", str(avro_dir)
    )
    assert result.exit_code == 2


def test_avro_round_trip_through_kafka(stack: Any, fresh_topic: str) -> None:
    schema = Catalog().event_schema("page_view")
    text = json.dumps(schema)
    conf = {
        "auto.register.schemas": True,
        "use.latest.version": False,
        "subject.name.strategy": topic_record_subject_name_strategy,
    }
    ctx = SerializationContext(fresh_topic, MessageField.VALUE)
    with SchemaRegistryClient(stack.registry_config()) as client:
        theirs = AvroSerializer(client, text, conf=conf)(page_view_event(), ctx)
        sid = client.lookup_schema(subject_for(fresh_topic, schema), Schema(text, "AVRO")).schema_id
        ours = Encoder(sid, schema).encode(page_view_event())
        assert ours == theirs  # byte-compatible with confluent-kafka's serializer

        producer = Producer(stack.kafka_settings().client_config(acks="all"))
        producer.produce(fresh_topic, value=theirs, key=b"a")
        producer.produce(fresh_topic, value=ours, key=b"a")
        assert producer.flush(10) == 0

        consumer = Consumer(
            stack.kafka_settings().client_config(
                group_id=f"g-{uuid.uuid4().hex}", auto_offset_reset="earliest"
            )
        )
        consumer.subscribe([fresh_topic])
        received: list[bytes] = []
        try:
            while len(received) < 2:
                msg = consumer.poll(10)
                assert msg is not None, "records did not arrive"
                value = msg.value()
                assert msg.error() is None and value is not None
                received.append(value)
        finally:
            consumer.close()
        deserializer = AvroDeserializer(
            client, conf={"subject.name.strategy": topic_record_subject_name_strategy}
        )
        decoder = Decoder(registry_lookup(client))
        for value in received:
            assert deserializer(value, ctx) == page_view_event()
            assert decoder.decode(value) == (sid, page_view_event())
