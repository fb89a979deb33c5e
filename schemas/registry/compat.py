"""Avro schema parsing, the canonical form used for equality, and compatibility levels.

Compatibility is decided by the ``avro`` package's reader/writer compatibility checker
(a port of Avro's own ``SchemaCompatibility``), not by hand-written rules.

Canonical form: the schema parsed by ``avro`` and dumped back as compact JSON with sorted
keys. Unlike Avro's Parsing Canonical Form it keeps defaults, docs, logical types and custom
attributes (such as ``"pii"``), because those change what a schema means to its users; it
does drop whitespace and key order, so the same schema written differently is still the same
schema with the same id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum

import avro.errors
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas.registry.errors import InvalidCompatibilityLevel, InvalidSchema


class Level(StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @classmethod
    def parse(cls, value: object) -> Level:
        if isinstance(value, str):
            try:
                return cls(value.upper())
            except ValueError:
                pass
        raise InvalidCompatibilityLevel(value)

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def checks_backward(self) -> bool:
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def checks_forward(self) -> bool:
        return self.value.startswith(("FORWARD", "FULL"))


@dataclass(frozen=True)
class ParsedSchema:
    """A valid Avro schema with its stored text, canonical text and fingerprint."""

    text: str
    canonical: str
    fingerprint: str
    avro: avro.schema.Schema


def parse_schema(text: object) -> ParsedSchema:
    """Parse and validate schema text; :class:`InvalidSchema` says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidSchema("Invalid schema: 'schema' must be a non-empty string")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        detail = f"{exc.msg} at char {exc.pos}"
        raise InvalidSchema(f"Invalid schema: not valid JSON ({detail})") from exc
    try:
        parsed = avro.schema.parse(json.dumps(raw))
    except (avro.errors.AvroException, TypeError, ValueError, KeyError) as exc:
        raise InvalidSchema(f"Invalid schema: {exc}") from exc
    canonical = json.dumps(parsed.to_json(), sort_keys=True, separators=(",", ":"))
    return ParsedSchema(
        text=json.dumps(raw, separators=(",", ":")),
        canonical=canonical,
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
        avro=parsed,
    )


def _can_read(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = sorted({i.name for i in result.incompatibilities})
    return [
        f"{'/'.join(kinds)}: {'; '.join(sorted(result.messages))} "
        f"at {', '.join(sorted(result.locations))}"
    ]


def check(level: Level, new: ParsedSchema, existing: list[ParsedSchema]) -> list[str]:
    """Incompatibility messages of ``new`` against ``existing`` (oldest first) under ``level``.

    Non-transitive levels compare with the latest existing schema only. An empty list
    means compatible.
    """
    if level is Level.NONE or not existing:
        return []
    targets = existing if level.transitive else existing[-1:]
    messages: list[str] = []
    for old in targets:
        if level.checks_backward:
            messages += [f"BACKWARD: {m}" for m in _can_read(new.avro, old.avro)]
        if level.checks_forward:
            messages += [f"FORWARD: {m}" for m in _can_read(old.avro, new.avro)]
    return messages
