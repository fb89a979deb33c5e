"""Avro in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary.

Byte-compatible with confluent-kafka's ``AvroSerializer``/``AvroDeserializer`` (tested both
ways). Schemas are fetched once per id through a lookup callable and kept parsed; the lookup
may return the schema as JSON text, a dict, or anything with ``schema_str`` (confluent-kafka's
``Schema``), so ``registry_lookup(client)`` or ``client.get_schema`` both fit.

Errors::

    ValueError
    └── WireFormatError       not a wire-format record: short frame, bad magic, undecodable body
    LookupError
    └── UnknownSchemaError    the record's schema id is not registered
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Callable
from typing import Any, Protocol

import fastavro

MAGIC = 0
_HEADER = struct.Struct(">bI")
WIRE_HEADER_SIZE = _HEADER.size  # magic byte and schema id, before the Avro body


class SchemaLike(Protocol):
    """What confluent-kafka's ``Schema`` offers a lookup result."""

    @property
    def schema_str(self) -> str | None: ...


SchemaSource = str | dict[str, Any] | SchemaLike
Lookup = Callable[[int], SchemaSource | None]


class WireFormatError(ValueError):
    """Bytes that are not a Confluent wire-format Avro record."""


class UnknownSchemaError(LookupError):
    """The schema id in a record is not known to the registry."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not registered")
        self.schema_id = schema_id


def parse(schema: SchemaSource) -> Any:
    """A fastavro parsed schema from JSON text, a dict, or a confluent-kafka ``Schema``."""
    if not isinstance(schema, str | dict):
        schema = str(schema.schema_str)
    raw = json.loads(schema) if isinstance(schema, str) else schema
    return fastavro.parse_schema(raw)


def frame(schema_id: int, datum: Any, parsed: Any) -> bytes:
    """``datum`` in the wire format: magic byte, schema id, Avro binary of ``parsed``."""
    buf = io.BytesIO()
    buf.write(_HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def schema_id_of(data: bytes) -> int:
    """The schema id in a wire-format record's header."""
    if len(data) < _HEADER.size:
        raise WireFormatError(f"record of {len(data)} bytes is too short for the wire format")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireFormatError(f"unknown magic byte {magic} (expected {MAGIC})")
    return int(schema_id)


class Decoder:
    """Decode wire-format records of any registered schema, caching parsed schemas by id."""

    def __init__(self, lookup: Lookup) -> None:
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
        """``(schema id, record)``; WireFormatError or UnknownSchemaError if it cannot be."""
        schema_id = schema_id_of(data)
        parsed = self.schema(schema_id)
        # What fastavro raises on corrupt bodies (found by fuzzing): truncation (EOFError),
        # bad union/enum index (IndexError), out-of-range ints and dates (OverflowError,
        # ValueError), bad UTF-8 (UnicodeDecodeError, a ValueError).
        body = io.BytesIO(data[_HEADER.size :])
        try:
            datum = fastavro.schemaless_reader(body, parsed, None)
        except (EOFError, ValueError, IndexError, OverflowError, struct.error) as exc:
            raise WireFormatError(f"body does not decode with schema {schema_id}: {exc}") from exc
        if not isinstance(datum, dict):
            raise WireFormatError(f"schema {schema_id} does not describe a record")
        # fastavro stops at the record's end and ignores what follows; bytes past it are not
        # this record's (and a cold file built from the bodies as received would carry them
        # into the next record's place)
        if body.tell() != len(data) - _HEADER.size:
            raise WireFormatError(
                f"{len(data) - _HEADER.size - body.tell()} byte(s) after the record of schema "
                f"{schema_id}"
            )
        return schema_id, datum


class Encoder:
    """Encode records of one schema whose registry id is known."""

    def __init__(self, schema_id: int, schema: SchemaSource) -> None:
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
