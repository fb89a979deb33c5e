"""The wire-format serde: round trip, errors, and byte-compatibility with confluent-kafka's own
AvroSerializer/AvroDeserializer, which talk to a tiny in-process fake of the registry client."""

from __future__ import annotations

import contextlib
import json
import random
from types import TracebackType
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    RegisteredSchema,
    Schema,
    topic_record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.catalog import default_catalog, subject_for
from schemas.serde import (
    Decoder,
    Encoder,
    UnknownSchemaError,
    WireFormatError,
    registry_lookup,
    schema_id_of,
)
from tests.unit.test_schemas_catalog import page_view_event


class FakeRegistry:
    """Just enough of ``SchemaRegistryClient`` for the serializers and the CLI, in memory.

    Compatibility is not computed: ``incompatible`` names the subjects that refuse a new schema.
    Unit tests only; integration tests use the real registry.
    """

    def __init__(self, first_id: int = 1) -> None:
        self.ids: dict[str, int] = {}  # canonical schema text -> id
        self.versions: dict[str, list[str]] = {}  # subject -> schema texts, oldest first
        self.incompatible: set[str] = set()
        self.calls: list[str] = []
        self._next_id = first_id

    @staticmethod
    def _canonical(schema: Schema) -> str:
        return json.dumps(json.loads(str(schema.schema_str)), sort_keys=True)

    def _registered(self, subject: str, text: str) -> RegisteredSchema:
        version = self.versions[subject].index(text) + 1
        return RegisteredSchema(
            subject=subject,
            version=version,
            schema_id=self.ids[text],
            guid=None,
            schema=Schema(text, "AVRO"),
        )

    def config(self) -> dict[str, Any]:
        return {}

    def register_schema_full_response(
        self, subject_name: str, schema: Schema, normalize_schemas: bool = False
    ) -> RegisteredSchema:
        self.calls.append(f"register {subject_name}")
        text = self._canonical(schema)
        versions = self.versions.setdefault(subject_name, [])
        if text not in versions:
            if versions and subject_name in self.incompatible:
                raise SchemaRegistryError(409, 409, "Schema being registered is incompatible")
            versions.append(text)
        if text not in self.ids:
            self.ids[text] = self._next_id
            self._next_id += 1
        return self._registered(subject_name, text)

    def register_schema(
        self, subject_name: str, schema: Schema, normalize_schemas: bool = False
    ) -> int:
        return int(self.register_schema_full_response(subject_name, schema).schema_id or 0)

    def lookup_schema(
        self,
        subject_name: str,
        schema: Schema,
        normalize_schemas: bool = False,
        deleted: bool = False,
    ) -> RegisteredSchema:
        self.calls.append(f"lookup {subject_name}")
        text = self._canonical(schema)
        if subject_name not in self.versions:
            raise SchemaRegistryError(404, 40401, f"Subject '{subject_name}' not found.")
        if text not in self.versions[subject_name]:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return self._registered(subject_name, text)

    def get_schema(
        self, schema_id: int, subject_name: str | None = None, fmt: str | None = None
    ) -> Schema:
        for text, known in self.ids.items():
            if known == schema_id:
                return Schema(text, "AVRO")
        raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found")

    def test_compatibility(
        self,
        subject_name: str,
        schema: Schema,
        version: int | str = "latest",
        normalize: bool = False,
        verbose: bool = False,
    ) -> bool:
        if subject_name not in self.versions:
            raise SchemaRegistryError(404, 40401, f"Subject '{subject_name}' not found.")
        latest = self.versions[subject_name][-1]
        return self._canonical(schema) == latest or subject_name not in self.incompatible

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


TOPIC = "events.raw"
CTX = SerializationContext(TOPIC, MessageField.VALUE)


def confluent_serializer(registry: FakeRegistry, schema: dict[str, Any]) -> Any:
    return AvroSerializer(
        registry,
        json.dumps(schema),
        conf={
            "auto.register.schemas": True,
            "subject.name.strategy": topic_record_subject_name_strategy,
        },
    )


def test_encoder_decoder_round_trip() -> None:
    schema = default_catalog().event_schema("page_view")
    data = Encoder(42, schema).encode(page_view_event())
    assert data[:5] == b"\x00\x00\x00\x00\x2a"
    decoded_id, datum = Decoder(lambda i: json.dumps(schema) if i == 42 else None).decode(data)
    assert decoded_id == 42 and datum == page_view_event()


def test_confluent_serializer_output_is_ours_byte_for_byte() -> None:
    registry = FakeRegistry(first_id=300)  # an id above 255 exercises the big-endian header
    schema = default_catalog().event_schema("page_view")
    theirs = confluent_serializer(registry, schema)(page_view_event(), CTX)
    assert theirs is not None
    # The serializer registered under TopicRecordNameStrategy, as the catalog names it.
    assert registry.calls == [f"register {subject_for(TOPIC, schema)}"]
    assert theirs == Encoder(300, schema).encode(page_view_event())
    assert Decoder(registry_lookup(registry)).decode(theirs) == (300, page_view_event())


def test_confluent_deserializer_reads_ours() -> None:
    registry = FakeRegistry()
    schema = default_catalog().event_schema("payment")
    registered = registry.register_schema_full_response(
        subject_for(TOPIC, schema), Schema(json.dumps(schema), "AVRO")
    )
    event = {
        **page_view_event(),
        "event_type": "payment",
        "payload": {
            "payment_id": "p-1",
            "account_id": "a-1",
            "amount_minor": 1999,
            "currency": "EUR",
            "status": "CAPTURED",
            "method": "CARD",
            "card_last4": "4242",
            "payer_email": None,
            "merchant_id": "m-1",
        },
    }
    ours = Encoder(int(registered.schema_id or 0), schema).encode(event)
    deserializer = AvroDeserializer(
        registry,
        conf={"subject.name.strategy": topic_record_subject_name_strategy},
    )
    assert deserializer(ours, CTX) == event


def test_decoder_accepts_client_get_schema_and_caches_by_id() -> None:
    registry = FakeRegistry()
    schema = default_catalog().event_schema("login")
    sid = registry.register_schema(subject_for(TOPIC, schema), Schema(json.dumps(schema), "AVRO"))
    fetched: list[int] = []

    def get_schema(schema_id: int) -> Schema:
        fetched.append(schema_id)
        return registry.get_schema(schema_id)

    decoder = Decoder(get_schema)  # a confluent-kafka Schema is a lookup result too
    event = {
        **page_view_event(),
        "event_type": "login",
        "payload": {
            "user_id": "u-1",
            "username": "ada",
            "success": False,
            "method": "PASSWORD",
            "mfa": False,
            "client_ip": None,
            "failure_reason": "bad_password",
        },
    }
    data = Encoder(sid, schema).encode(event)
    assert decoder.decode(data) == (sid, event)
    assert decoder.decode(data) == (sid, event)
    assert fetched == [sid]


def test_registry_lookup_maps_unknown_ids() -> None:
    decoder = Decoder(registry_lookup(FakeRegistry()))
    with pytest.raises(UnknownSchemaError) as info:
        decoder.decode(b"\x00\x00\x00\x00\x07\x02")
    assert info.value.schema_id == 7


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", WireFormatError),
        (b"\x00\x00\x00", WireFormatError),
        (b"\x01\x00\x00\x00\x01abc", WireFormatError),
        (b"\x00\x00\x00\x00\x01", WireFormatError),  # header only: the body is missing
        (b"\x00\x00\x00\x00\x07\x02", UnknownSchemaError),
        (b"\x00\x00\x00\x00\x01\xff\xff\xff", WireFormatError),
    ],
)
def test_wire_format_errors(data: bytes, error: type[Exception]) -> None:
    schema = json.dumps(default_catalog().event_schema("login"))
    decoder = Decoder(lambda i: schema if i == 1 else None)
    with pytest.raises(error):
        decoder.decode(data)


def test_bytes_after_the_record_are_a_wire_format_error() -> None:
    """fastavro decodes a record and ignores what follows it; the object sink stores bodies as
    received, so one with bytes appended would shift every later record of its file."""
    schema = default_catalog().event_schema("page_view")
    good = Encoder(1, schema).encode(page_view_event())
    decoder = Decoder(lambda i: json.dumps(schema))
    assert decoder.decode(good)[1] == page_view_event()
    with pytest.raises(WireFormatError, match="2 byte"):
        decoder.decode(good + b"\x02\x02")


def test_wire_format_error_is_a_value_error() -> None:
    assert issubclass(WireFormatError, ValueError)


def test_corrupt_bodies_raise_only_wire_format_errors() -> None:
    """Flipped and truncated bytes either decode or raise WireFormatError, nothing else
    (fastavro raises OverflowError for some, which once escaped)."""
    schema = default_catalog().event_schema("page_view")
    good = Encoder(1, schema).encode(page_view_event())
    decoder = Decoder(lambda i: schema)
    rnd = random.Random(7)
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 6)):
            data[rnd.randrange(5, len(data))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            data = data[: rnd.randrange(5, len(data))]
        with contextlib.suppress(WireFormatError):
            decoder.decode(bytes(data))


def test_schema_id_of() -> None:
    assert schema_id_of(b"\x00\x00\x00\x01\x02\x00") == 258
