"""One raw event in, one signed event out: decode -> enrich -> mask -> sign -> encode.

This class knows nothing of faust; the faust agent (``streams/app.py``) feeds it messages and
keeps the chain heads in a changelog-backed table, and tests drive it directly.

Failures are classified here:

- :class:`PoisonMessage` (not the wire format, unknown schema id, not an event): dead-lettered
  at once, never retried, never blocking the partition;
- :class:`streams.enrich.EnrichmentFailed` (a slow or failing enricher): transient, retried
  with backoff by the agent, then dead-lettered.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.serde import Decoder, Encoder, UnknownSchemaError, WireFormatError
from sealstream.deadletters import DeadLetterHeaders, is_dead_letter_header
from sealstream.integrity import ChainHead, canonical_json, payload_hash, sign
from sealstream.keys import HmacKeyring
from streams.enrich import EnrichInput, Pipeline
from streams.mask import Masker
from streams.route import RoutingTable

ENVELOPE_FIELDS = ("event_id", "tenant", "event_type", "occurred_at", "received_at", "payload")


class PoisonMessage(ValueError):
    """A record that can never be processed; it goes to the dead-letter topic unchanged."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Source:
    topic: str
    partition: int
    offset: int
    headers: Mapping[str, bytes]
    # the event's place in its record, when that record is a frame (schemas/frames.py)
    index: int | None = None

    @property
    def chain_id(self) -> str:
        return f"{self.topic}/{self.partition}"


@dataclass(frozen=True)
class Signed:
    record: dict[str, Any]
    value: bytes
    head: ChainHead


def _millis(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class Processor:
    def __init__(
        self,
        decoder: Decoder,
        pipeline: Pipeline,
        masker: Masker,
        routes: RoutingTable,
        keys: HmacKeyring,
        encoder: Encoder,
    ) -> None:
        self.decoder = decoder
        self.pipeline = pipeline
        self.masker = masker
        self.routes = routes
        self.keys = keys
        self.encoder = encoder
        # Reads the worker's own output back (chain heads); same registry lookups as input.
        self.output_decoder = decoder

    def decode(self, raw: bytes | None) -> tuple[int, dict[str, Any]]:
        if not raw:
            raise PoisonMessage("empty_value", "record has no value")
        try:
            schema_id, event = self.decoder.decode(raw)
        except UnknownSchemaError as exc:
            raise PoisonMessage("unknown_schema", str(exc)) from exc
        except WireFormatError as exc:
            raise PoisonMessage("undecodable", str(exc)) from exc
        missing = [f for f in ENVELOPE_FIELDS if f not in event]
        if missing:
            raise PoisonMessage("not_an_event", f"record lacks envelope fields {missing}")
        return schema_id, event

    async def process(self, raw: bytes | None, source: Source, head: ChainHead) -> Signed:
        schema_id, event = self.decode(raw)
        attributes = await self.pipeline.run(EnrichInput(event, source.headers))
        classification = attributes.get("classification", "internal")
        tenant, event_type = str(event["tenant"]), str(event["event_type"])
        payload = event["payload"]
        hot, masked = self.masker.mask(tenant, event_type, payload)
        route = self.routes.route(event_type, tenant, classification)
        record: dict[str, Any] = {
            "event_id": str(event["event_id"]),
            "tenant": tenant,
            "event_type": event_type,
            "occurred_at": _millis(event["occurred_at"]),
            "received_at": _millis(event["received_at"]),
            "producer": str(event.get("producer", "")),
            "correlation_id": str(event.get("correlation_id", "")),
            "request_id": str(event.get("request_id", "")),
            "source": event.get("source"),
            "classification": classification,
            "route": route.value,
            "payload_json": canonical_json(payload).decode(),
            "hot_payload_json": canonical_json(hot).decode(),
            "masked_fields": masked,
            "payload_sha256": str(event.get("payload_sha256", "")),
            "content_sha256": payload_hash(payload),
            "hot_content_sha256": payload_hash(hot),
            "enrichment": attributes,
            "schema_id": schema_id,
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "chain_id": source.chain_id,
            "signed_at": int(time.time() * 1000),
        }
        new_head = sign(record, self.keys, head)
        return Signed(record, self.encoder.encode(record), new_head)


def cloudevent_headers(record: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The CloudEvents Kafka protocol binding (binary content mode) of a signed record, so a
    CloudEvents consumer reads events.signed as CloudEvents: ``ce_id`` the event id,
    ``ce_source`` its source (``sealstream:<producer>`` when the publisher named none),
    ``ce_type`` its event type, ``ce_time`` when it occurred; the value is Avro."""
    occurred = dt.datetime.fromtimestamp(record["occurred_at"] / 1000, dt.UTC)
    source = record.get("source") or f"sealstream:{record['producer']}"
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(record["event_id"]).encode()),
        ("ce_source", str(source).encode()),
        ("ce_type", str(record["event_type"]).encode()),
        ("ce_time", occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
        ("content-type", b"application/avro"),
    ]


def checkpoint(chain_id: str, head: ChainHead, keys: HmacKeyring) -> dict[str, Any]:
    """A signed statement of a chain's head (the ``audit.checkpoints`` record)."""
    body = {
        "chain_id": chain_id,
        "seq": head.seq,
        "head_hash": head.hash,
        "created_at": int(time.time() * 1000),
        "key_id": keys.active,
    }
    _, mac = keys.sign(canonical_json(body))
    return {**body, "signature": mac.hex()}


def dead_letter_headers(
    source: Source,
    *,
    error: BaseException,
    reason: str,
    stage: str,
    attempts: int,
    first_failure: float,
    last_failure: float,
) -> list[tuple[str, bytes]]:
    """The error headers a dead letter carries (its value stays the original bytes): the
    ``dlq.*`` ones (``sealstream/deadletters.py``) and the record's own."""
    correlation = source.headers.get("correlation_id", b"")
    error_headers = DeadLetterHeaders(
        reason=reason,
        stage=stage,
        message=str(error),
        error_class=type(error).__name__,
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        index=source.index,
        attempts=attempts,
        first_failure_ms=int(first_failure * 1000),
        last_failure_ms=int(last_failure * 1000),
    ).to_headers()
    return [
        *error_headers,
        ("correlation_id", correlation),
        # the record's own, but never a dlq.* one: readers take the last of a name, so one
        # written to events.raw would stand for the worker's (a forged dlq.offset moved the
        # partition's resume point, and its events were skipped as replayed)
        *[
            (k, v)
            for k, v in source.headers.items()
            if k != "correlation_id" and not is_dead_letter_header(k)
        ],
    ]
