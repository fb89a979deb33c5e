"""Avro in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary.

Byte-compatible with confluent-kafka's ``AvroSerializer``/``AvroDeserializer`` (tested both
ways). Schemas are fetched once per id through a lookup callable (for example a
``SchemaRegistryClient``'s ``get_schema``) and kept parsed.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Callable
from typing import Any

import fastavro

MAGIC = 0
_HEADER = struct.Struct(">bI")


class WireFormatError(ValueError):
    """Bytes that are not a Confluent wire-format Avro record."""


class UnknownSchemaError(LookupError):
    """The schema id in a record is not known to the registry."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not registered")
        self.schema_id = schema_id


def parse(schema: dict[str, Any] | str) -> Any:
    raw = json.loads(schema) if isinstance(schema, str) else schema
    return fastavro.parse_schema(raw)


def frame(schema_id: int, datum: Any, parsed: Any) -> bytes:
    buf = io.BytesIO()
    buf.write(_HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def schema_id_of(data: bytes) -> int:
    if len(data) < _HEADER.size + 1:
        raise WireFormatError(f"record of {len(data)} bytes is too short for the wire format")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireFormatError(f"unknown magic byte {magic} (expected {MAGIC})")
    return int(schema_id)


class Decoder:
    """Decode wire-format records of any registered schema, caching parsed schemas by id."""

    def __init__(self, lookup: Callable[[int], str | dict[str, Any] | None]) -> None:
        self._lookup = lookup
        self._parsed: dict[int, Any] = {}
        self._lock = threading.Lock()

    def schema(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            text = self._lookup(schema_id)
            if text is None:
                raise UnknownSchemaError(schema_id)
            parsed = parse(text)
            with self._lock:
                self._parsed[schema_id] = parsed
        return parsed

    def decode(self, data: bytes) -> tuple[int, dict[str, Any]]:
        schema_id = schema_id_of(data)
        parsed = self.schema(schema_id)
        try:
            datum = fastavro.schemaless_reader(io.BytesIO(data[_HEADER.size :]), parsed, None)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
            raise WireFormatError(f"body does not decode with schema {schema_id}: {exc}") from exc
        if not isinstance(datum, dict):
            raise WireFormatError(f"schema {schema_id} does not describe a record")
        return schema_id, datum


class Encoder:
    """Encode records of one schema whose registry id is known."""

    def __init__(self, schema_id: int, schema: dict[str, Any] | str) -> None:
        self.schema_id = schema_id
        self.parsed = parse(schema)

    def encode(self, datum: dict[str, Any]) -> bytes:
        return frame(self.schema_id, datum, self.parsed)


def registry_lookup(client: Any) -> Callable[[int], str | None]:
    """A lookup for :class:`Decoder` backed by confluent-kafka's ``SchemaRegistryClient``."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    def lookup(schema_id: int) -> str | None:
        try:
            return str(client.get_schema(schema_id).schema_str)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise

    return lookup
