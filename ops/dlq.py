"""Dead letters for operators: select, count, show, replay and purge (``sealstream dlq``).

Reading is read-only (nothing is committed). A replay re-runs each selected dead letter
through today's decoding, validation and enrichment and publishes only those that now pass and
whose event id is not stored yet; its progress is kept in the compacted ``dlq.replays`` topic,
written in the same transaction as the records. A purge writes a marker only. Both are
recorded in the audit trail.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ops import actions
from ops.actions import Actor
from ops.errors import NotFound, Unavailable, UsageError
from ops.feedback import SILENT, Advance, Feedback
from ops.settings import Settings

if TYPE_CHECKING:
    from streams.dlq import DeadLetter, Filter, Prediction, ReplayWriter

MASK_KEYS_FILE = "mask.json"
STORED_CHUNK = 500  # event ids per lookup of what the hot store already holds


def _millis(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"--{name} must be an ISO date or time, not {value!r}") from exc
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() * 1000)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on: the topic (None: the settings' dead-letter topic)
    and the filters, as the operator gave them (times in ISO form)."""

    topic: str | None = None
    reason: str | None = None
    stage: str | None = None
    tenant: str | None = None
    event_type: str | None = None
    since: str | None = None
    until: str | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def filter(self) -> Filter:
        """The filter the dead-letter reader applies; a time that is not ISO is a usage error."""
        from streams.dlq import Filter

        return Filter(
            self.reason,
            self.stage,
            self.tenant,
            self.event_type,
            _millis(self.since, "since"),
            _millis(self.until, "until"),
            self.partition,
            self.from_offset,
            self.to_offset,
        )

    def limited_to(self, tenant: str | None) -> Selection:
        """The same selection for an actor limited to ``tenant`` (None: no limit)."""
        return self if tenant is None else replace(self, tenant=tenant)


def topic_of(settings: Settings, selection: Selection) -> str:
    return selection.topic or settings.worker.dlq_topic


def read(
    settings: Settings, selection: Selection, chosen: Filter, *, hide_purged: bool = False
) -> list[DeadLetter]:
    """The dead letters ``chosen`` selects (without the purged ones if ``hide_purged``)."""
    from streams.dlq import PURGED, marker_key, read_dead_letters, read_markers

    name = topic_of(settings, selection)
    try:
        letters = list(read_dead_letters(settings.kafka, name, chosen))
        if hide_purged:
            markers = read_markers(settings.kafka, settings.worker.dlq_replays_topic)
            letters = [x for x in letters if markers.get(marker_key(x), {}).get("status") != PURGED]
        return letters
    except LookupError as exc:
        raise Unavailable(str(exc)) from exc


def listing(settings: Settings, selection: Selection) -> list[DeadLetter]:
    """What ``stats`` and ``list`` show: the selected dead letters that are not purged."""
    return read(settings, selection, selection.filter(), hide_purged=True)


def stats(settings: Settings, selection: Selection) -> dict[str, Any]:
    """Counts by reason, stage, tenant, event type and age."""
    from streams.dlq import stats as count

    return count(iter(listing(settings, selection)))


def show(settings: Settings, topic: str | None, coordinates: str) -> dict[str, Any]:
    """One dead letter at ``PARTITION:OFFSET`` in full: every header, the value decoded if its
    schema allows, else its original bytes."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from schemas.serde import Decoder, registry_lookup

    try:
        partition, offset = (int(x) for x in coordinates.split(":"))
    except ValueError as exc:
        raise UsageError("give PARTITION:OFFSET, e.g. 0:42") from exc
    selection = Selection(topic, partition=partition, from_offset=offset, to_offset=offset)
    letters = read(settings, selection, selection.filter())
    if not letters:
        raise NotFound(f"no dead letter at {coordinates}")
    decoder = Decoder(registry_lookup(SchemaRegistryClient(settings.registry.client_config())))
    return letters[0].detail(decoder)


def _stored_lookup(settings: Settings) -> Any:
    """A function: event ids -> those the hot store already holds."""
    from sinks.clickhouse.access import hot_reader, quote

    reader, _ = hot_reader(settings.clickhouse)

    def stored(ids: list[str]) -> set[str]:
        from clickhouse_connect.driver.exceptions import DatabaseError

        found: set[str] = set()
        for start in range(0, len(ids), STORED_CHUNK):
            chunk = ", ".join(quote(i) for i in ids[start : start + STORED_CHUNK])
            sql = f"SELECT event_id FROM {{db}}.events_by_id WHERE event_id IN ({chunk})"
            try:
                rows = reader(sql)
            except DatabaseError as exc:  # a hot store never created holds nothing
                if "UNKNOWN_DATABASE" in str(exc) or "UNKNOWN_TABLE" in str(exc):
                    return set()
                raise
            found |= {str(r["event_id"]) for r in rows}
        return found

    return stored


def predict(
    settings: Settings, selection: Selection, chosen: Filter, tenant_limit: str | None
) -> list[Prediction]:
    """What replaying each selected dead letter would do now (``--dry-run``); letters of
    other tenants than ``tenant_limit`` are denied."""
    import asyncio

    from sealstream.keys import load_hmac_keyring
    from sinks.clickhouse.access import HotUnavailable
    from streams.app import build_processor
    from streams.dlq import predict as run_predict
    from streams.dlq import read_markers

    letters = read(settings, selection, chosen)
    try:
        markers = read_markers(settings.kafka, settings.worker.dlq_replays_topic)
    except LookupError as exc:
        raise Unavailable(str(exc)) from exc
    keys = settings.keys
    processor, _ = build_processor(
        settings.worker,
        settings.registry,
        load_hmac_keyring(keys),
        load_hmac_keyring(keys, MASK_KEYS_FILE),
    )
    stored = _stored_lookup(settings)
    try:
        predictions = asyncio.run(run_predict(processor, letters, markers, stored))
    except HotUnavailable as exc:
        raise Unavailable(f"cannot tell which events are already stored: {exc}") from exc
    if tenant_limit is not None:
        for p in predictions:
            if p.tenant != tenant_limit and p.outcome in ("pass", "fail", "stored"):
                p.outcome, p.reason = "denied", f"not tenant {tenant_limit}"
    return predictions


@dataclass(frozen=True)
class ReplayOptions:
    """How a replay publishes: where (None: each letter's original topic), whether at all,
    at most how many records per second (0: no limit), how many per transaction."""

    to: str | None = None
    dry_run: bool = False
    rate: float = 0.0
    batch: int = 100


@dataclass
class Replay:
    """A replay's outcome: the machine-readable result and every letter's prediction."""

    result: dict[str, Any]
    predictions: list[Prediction] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.result.items() if k != "letters"}


def _writer(settings: Settings, selection: Selection) -> ReplayWriter:
    from streams.dlq import ReplayWriter

    return ReplayWriter(
        settings.kafka, settings.worker.dlq_replays_topic, topic_of(settings, selection)
    )


def _publish(
    writer: ReplayWriter,
    to_publish: list[Prediction],
    options: ReplayOptions,
    replay_id: str,
    actor: Actor,
    started: float,
    advance: Advance,
) -> int:
    """Publish in transactions of ``options.batch``, paced to ``options.rate`` from
    ``started`` (a monotonic time)."""
    from streams.dlq import REPLAYED

    published, step = 0, max(1, options.batch)
    for start in range(0, len(to_publish), step):
        chunk = to_publish[start : start + step]
        if options.rate > 0:  # pace: never ahead of rate * elapsed
            wait = (published + len(chunk)) / options.rate - (time.monotonic() - started)
            if wait > 0:
                time.sleep(wait)
        writer.write(chunk, REPLAYED, replay_id, actor.who, options.to)
        published += len(chunk)
        advance(len(chunk))
    return published


def replay(
    settings: Settings,
    selection: Selection,
    options: ReplayOptions,
    token: str | None = None,
    feedback: Feedback = SILENT,
) -> Replay:
    """Re-publish the selected dead letters that now pass (see the module doc); with
    ``options.dry_run`` only predict. ``token`` needs the ``dlq:replay`` scope."""
    from streams.dlq import summarize

    actor = actions.identify(settings, token, "dlq:replay")
    chosen = selection.filter()
    predictions = predict(settings, selection, chosen, actor.tenant)
    to_publish = [p for p in predictions if p.outcome == "pass"]
    replay_id = str(uuid.uuid4())
    published = 0
    if not options.dry_run and to_publish:
        writer, started = _writer(settings, selection), time.monotonic()
        with feedback.bars() as bars:
            advance = bars.task("replaying", total=len(to_publish))
            published = _publish(writer, to_publish, options, replay_id, actor, started, advance)
    done = Replay(
        {
            "dry_run": options.dry_run,
            "replay_id": None if options.dry_run else replay_id,
            "published": published,
            **summarize(predictions),
            "letters": [p.as_dict() for p in predictions],
        },
        predictions,
    )
    actions.record(
        settings,
        "dlq_replay_dry_run" if options.dry_run else "dlq_replay",
        done.summary | {"filters": chosen.__dict__},
        True,
        actor=actor.who,
        feedback=feedback,
    )
    return done


@dataclass
class Purge:
    """Dead letters selected for purging and not marked yet, and who purges them."""

    selection: Selection
    chosen: Filter
    actor: Actor
    letters: list[DeadLetter]


def select_purge(settings: Settings, selection: Selection, token: str | None = None) -> Purge:
    """What a purge would mark: the selected dead letters without a marker (neither replayed
    nor purged), limited to the token's tenant. ``token`` needs the ``dlq:purge`` scope."""
    from streams.dlq import marker_key, read_markers

    actor = actions.identify(settings, token, "dlq:purge")
    selection = selection.limited_to(actor.tenant)
    chosen = selection.filter()
    markers = read_markers(settings.kafka, settings.worker.dlq_replays_topic)
    letters = [x for x in read(settings, selection, chosen) if marker_key(x) not in markers]
    return Purge(selection, chosen, actor, letters)


def purge(settings: Settings, plan: Purge, feedback: Feedback = SILENT) -> int:
    """Mark ``plan``'s dead letters as purged: never replayed, hidden from stats and list.
    Kafka cannot delete single records; the bytes expire with the topic's retention."""
    from streams.dlq import PURGED, Prediction

    writer = _writer(settings, plan.selection)
    marked = [Prediction(x, PURGED) for x in plan.letters]
    writer.write(marked, PURGED, str(uuid.uuid4()), plan.actor.who, None)
    detail = {"purged": len(plan.letters), "filters": plan.chosen.__dict__}
    actions.record(settings, "dlq_purge", detail, True, actor=plan.actor.who, feedback=feedback)
    return len(plan.letters)
