"""The largest event the pipeline can carry, derived from the topics it will be written to.

An accepted event is written three times in the worst case: to ``events.raw`` as the gateway
encodes it, to ``events.signed`` as the worker signs it (the original payload *and* its masked
copy, as canonical JSON, plus the envelope, enrichment and chain fields), or to
``events.raw.dlq`` with error headers if the worker cannot sign it. Each topic refuses a record
batch over its ``max.message.bytes``; a 202 for an event one of them would refuse was an
accepted event lost (an attack run found one: 900 KB of payload, a 1.8 MB signed record).

So the gateway reads ``max.message.bytes`` of the three topics at start-up and refuses (413,
``event_too_large``) any event whose signed record could exceed the smallest, with a bound
that errs on the large side: the payload JSON twice, an eighth more for what the Avro round
trip can lengthen (timestamps come back with ``+00:00``), a pseudonym per PII field, the
producer's subject and a fixed allowance for every other field and the record's framing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealstream.settings import KafkaSettings
from sealstream.topics import record_limit

FIXED_ALLOWANCE = 8192  # envelope, hashes, chain fields, enrichment, headers, batch framing
PER_PII_FIELD = 128  # "pii:<kind>:<16 hex>" in the hot copy and the field's name in the list


@dataclass(frozen=True)
class RecordLimits:
    """``max_record_bytes``: the smallest ``max.message.bytes`` of the topics an event goes to;
    ``topic``: which one that is (for the error message)."""

    max_record_bytes: int
    topic: str

    @staticmethod
    def signed_bound(payload_json_bytes: int, pii_fields: int, producer: str) -> int:
        """An upper bound of the signed record's size for a payload of that many JSON bytes."""
        payload = payload_json_bytes + payload_json_bytes // 8
        return 2 * payload + PER_PII_FIELD * pii_fields + len(producer.encode()) + FIXED_ALLOWANCE

    @property
    def max_payload_bytes(self) -> int:
        """About the largest payload JSON accepted (for messages and docs)."""
        return max(0, (self.max_record_bytes - FIXED_ALLOWANCE) * 4 // 9)

    def refusal(self, payload_json_bytes: int, pii_fields: int, producer: str) -> str | None:
        bound = self.signed_bound(payload_json_bytes, pii_fields, producer)
        if bound <= self.max_record_bytes:
            return None
        return (
            f"the payload is {payload_json_bytes} bytes of JSON; its signed record (which carries "
            f"the payload twice) could exceed the {self.max_record_bytes} bytes of "
            f"{self.topic}: send at most about {self.max_payload_bytes} bytes"
        )


def record_limits(kafka: KafkaSettings, topics: list[str]) -> RecordLimits:
    """The limit an event's records must fit: the smallest of the topics' and the producers'."""
    return RecordLimits(*record_limit(kafka, topics))
