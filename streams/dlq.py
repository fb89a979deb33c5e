"""Reading dead letters: every record of a dead-letter topic with its error headers, selected
by reason, stage, tenant, event type, time and offsets (``sealstream dlq stats|list|show``).

Dead letters keep the original bytes as their value and the reason in ``dlq.*`` headers
(streams/processor.py ``dead_letter_headers``; the sinks add their own stage).
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from schemas.serde import Decoder, UnknownSchemaError, WireFormatError
from sealstream.deadletters import DeadLetterHeaders, source_headers
from sealstream.follow import read_to_end
from sealstream.settings import KafkaSettings

AGE_BUCKETS = ((3600, "<1h"), (86400, "<1d"), (7 * 86400, "<7d"), (30 * 86400, "<30d"))


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, str]
    value: bytes
    key: bytes | None = None

    @property
    def error(self) -> DeadLetterHeaders:
        """Why it is a dead letter (its ``dlq.*`` headers, typed)."""
        return DeadLetterHeaders.from_headers(self.headers)

    @property
    def reason(self) -> str:
        return self.error.reason

    @property
    def stage(self) -> str:
        return self.error.stage

    @property
    def tenant(self) -> str:
        return self.headers.get("tenant", "")

    @property
    def event_type(self) -> str:
        return self.headers.get("event_type", "")

    @property
    def failed_ms(self) -> int:
        return self.error.last_failure_ms or self.timestamp_ms

    def summary(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "stage": self.stage,
            "tenant": self.tenant,
            "event_type": self.event_type,
            "event_id": self.headers.get("event_id", ""),
            "failed_at_ms": self.failed_ms,
            "source": "{}/{}@{}".format(
                self.headers.get("dlq.topic", "?"),
                self.headers.get("dlq.partition", "?"),
                self.headers.get("dlq.offset", "?"),
            ),
            "message": self.headers.get("dlq.message", "")[:200],
        }

    def detail(self, decoder: Decoder | None) -> dict[str, Any]:
        """Everything, with the value decoded where its schema allows, else its bytes."""
        out: dict[str, Any] = {**self.summary(), "headers": self.headers, "bytes": len(self.value)}
        out["message"] = self.headers.get("dlq.message", "")
        if decoder is not None:
            try:
                schema_id, record = decoder.decode(self.value)
                out["decoded"] = {"schema_id": schema_id, "record": record}
                return out
            except (UnknownSchemaError, WireFormatError) as exc:
                out["decode_error"] = str(exc)
        out["value_base64"] = base64.b64encode(self.value).decode()
        out["value_hex_head"] = self.value[:64].hex()
        return out


@dataclass(frozen=True)
class Filter:
    reason: str | None = None
    stage: str | None = None
    tenant: str | None = None
    event_type: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (self.reason is None or letter.reason == self.reason)
            and (self.stage is None or letter.stage == self.stage)
            and (self.tenant is None or letter.tenant == self.tenant)
            and (self.event_type is None or letter.event_type == self.event_type)
            and (self.since_ms is None or letter.failed_ms >= self.since_ms)
            and (self.until_ms is None or letter.failed_ms <= self.until_ms)
            and (self.partition is None or letter.partition == self.partition)
            and (self.from_offset is None or letter.offset >= self.from_offset)
            and (self.to_offset is None or letter.offset <= self.to_offset)
        )


def read_dead_letters(kafka: KafkaSettings, topic: str, selection: Filter) -> Iterator[DeadLetter]:
    """Every dead letter on ``topic`` now (up to the end offsets at the start) matching
    ``selection``; commits nothing."""
    stop = None if selection.to_offset is None else selection.to_offset + 1
    for message in read_to_end(
        kafka, topic, partition=selection.partition, start=selection.from_offset, stop=stop
    ):
        headers: dict[str, str] = {}
        for key, raw in cast(list[tuple[str, Any]], message.headers() or []):
            if raw is not None:
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                headers[str(key)] = str(text)
        letter = DeadLetter(
            topic,
            int(message.partition() or 0),
            int(message.offset() or 0),
            message.timestamp()[1],
            headers,
            message.value() or b"",
            message.key(),
        )
        if selection.matches(letter):
            yield letter


def stats(letters: Iterator[DeadLetter], now_ms: int | None = None) -> dict[str, Any]:
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    by: dict[str, Counter[str]] = {
        k: Counter() for k in ("reason", "stage", "tenant", "event_type", "age")
    }
    total = 0
    for letter in letters:
        total += 1
        by["reason"][letter.reason] += 1
        by["stage"][letter.stage] += 1
        by["tenant"][letter.tenant or "-"] += 1
        by["event_type"][letter.event_type or "-"] += 1
        age_s = max(0, now_ms - letter.failed_ms) / 1000
        by["age"][next((label for limit, label in AGE_BUCKETS if age_s < limit), ">=30d")] += 1
    return {"total": total, **{k: dict(v.most_common()) for k, v in by.items()}}


# -- replay and purge -----------------------------------------------------------------------
#
# Progress lives in a compacted topic (``dlq.replays``): one record per dead letter handled,
# keyed ``<dlq topic>/<partition>/<offset>``, value {"status": "replayed"|"purged", ...}.
# A replay writes the re-published records and their markers in one Kafka transaction, so a
# replay killed at any point has either re-published a dead letter and marked it, or neither:
# running it again continues where it stopped, and a finished one repeats nothing.

REPLAYED = "replayed"
PURGED = "purged"


def marker_key(letter: DeadLetter) -> str:
    return f"{letter.topic}/{letter.partition}/{letter.offset}"


def read_markers(kafka: KafkaSettings, topic: str) -> dict[str, dict[str, Any]]:
    """The latest marker of every dead letter (committed transactions only)."""
    markers: dict[str, dict[str, Any]] = {}
    for message in read_to_end(kafka, topic):
        key = (message.key() or b"").decode()
        if message.value():
            markers[key] = json.loads(message.value() or b"{}")
        else:
            markers.pop(key, None)
    return markers


@dataclass
class Prediction:
    letter: DeadLetter
    outcome: str  # pass, fail, stored, replayed, purged, denied
    reason: str = ""
    event_id: str | None = None
    tenant: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.letter.partition,
            "offset": self.letter.offset,
            "outcome": self.outcome,
            "reason": self.reason,
            "event_id": self.event_id,
            "tenant": self.tenant,
            "dead_letter_reason": self.letter.reason,
        }


async def predict(
    processor: Any,
    letters: list[DeadLetter],
    markers: dict[str, dict[str, Any]],
    stored: Callable[[list[str]], set[str]],
) -> list[Prediction]:
    """What replaying each dead letter would do now: today's decoding, validation and
    enrichment (the worker's own Processor and Pipeline), and whether its event id is already
    stored (then it is skipped)."""
    from streams.enrich import EnrichInput, EnrichmentFailed
    from streams.processor import PoisonMessage

    out: list[Prediction] = []
    for letter in letters:
        mark = markers.get(marker_key(letter))
        if mark is not None:
            out.append(
                Prediction(letter, str(mark.get("status")), "already handled", mark.get("event_id"))
            )
            continue
        try:
            _, event = processor.decode(letter.value)
        except PoisonMessage as exc:
            out.append(Prediction(letter, "fail", exc.reason, None, letter.tenant))
            continue
        event_id = str(event["event_id"])
        tenant = str(event.get("tenant", letter.tenant))
        headers = {k: v.encode() for k, v in letter.headers.items() if not k.startswith("dlq.")}
        try:
            await processor.pipeline.run(EnrichInput(event, headers))
        except EnrichmentFailed as exc:
            out.append(Prediction(letter, "fail", exc.reason, event_id, tenant))
            continue
        out.append(Prediction(letter, "pass", "", event_id, tenant))
    ids = [p.event_id for p in out if p.outcome == "pass" and p.event_id]
    already = stored(ids) if ids else set()
    for p in out:
        if p.outcome == "pass" and p.event_id in already:
            p.outcome, p.reason = "stored", "event id already stored"
    return out


def summarize(predictions: list[Prediction]) -> dict[str, Any]:
    counts = Counter(p.outcome for p in predictions)
    failing = Counter(p.reason for p in predictions if p.outcome == "fail")
    return {
        "selected": len(predictions),
        **{k: counts.get(k, 0) for k in ("pass", "fail", "stored", "replayed", "purged", "denied")},
        "fail_reasons": dict(failing),
    }


def replay_headers(letter: DeadLetter, replay_id: str) -> list[tuple[str, str | bytes | None]]:
    """What a replayed dead letter is sent with: its record's own headers (no ``dlq.*``, and
    no ``replay.*`` of an earlier replay: a replay of a replay carried both, and readers take
    the last) and this replay's."""
    headers: list[tuple[str, str | bytes | None]] = [
        (name, value)
        for name, value in source_headers(letter.headers.items())
        if not name.startswith("replay.")
    ]
    where = "{}/{}@{}".format(
        letter.headers.get("dlq.topic", ""),
        letter.headers.get("dlq.partition", ""),
        letter.headers.get("dlq.offset", ""),
    )
    return [
        *headers,
        ("replay.id", replay_id.encode()),
        ("replay.of", marker_key(letter).encode()),
        ("replay.source", where.encode()),
    ]


class ReplayWriter:
    """Re-publish dead letters and write their markers, a transaction per batch."""

    def __init__(self, kafka: KafkaSettings, markers_topic: str, dlq_topic: str) -> None:
        from confluent_kafka import Producer

        self.markers_topic = markers_topic
        # one transactional id per dead-letter topic: a second replay of the same topic
        # fences the first instead of interleaving with it
        self.producer = Producer(
            kafka.client_config(
                transactional_id=f"sealstream-dlq-replay-{dlq_topic}",
                enable_idempotence=True,
                acks="all",
            )
        )
        self.producer.init_transactions(30)

    def write(
        self,
        batch: list[Prediction],
        status: str,
        replay_id: str,
        by: str,
        target: str | None,
    ) -> None:
        self.producer.begin_transaction()
        try:
            now = int(time.time() * 1000)
            for p in batch:
                letter = p.letter
                if status == REPLAYED:
                    destination = target or letter.error.topic
                    if not destination:
                        raise ValueError(f"dead letter {marker_key(letter)} names no topic")
                    headers = replay_headers(letter, replay_id)
                    self.producer.produce(destination, letter.value, letter.key, headers=headers)
                marker = {
                    "status": status,
                    "replay_id": replay_id,
                    "by": by,
                    "at_ms": now,
                    "event_id": p.event_id,
                    "target": target,
                }
                self.producer.produce(
                    self.markers_topic, json.dumps(marker).encode(), marker_key(letter).encode()
                )
            self.producer.commit_transaction(30)
        except BaseException:
            self.producer.abort_transaction(30)
            raise
