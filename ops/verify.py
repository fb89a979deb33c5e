"""``sealstream verify``: recompute every signature and walk every hash chain, anchored to the
signed checkpoints, and compare hot and cold per tenant and day (sinks/verify.py does the
checking; this gathers what it checks and records the run in the audit trail)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ops import actions
from ops.errors import Unavailable, UsageError
from ops.feedback import SILENT, Feedback
from ops.settings import Settings
from sealstream.settings import KafkaSettings, RegistrySettings

if TYPE_CHECKING:
    from sinks.objects.reader import Selection
    from sinks.verify import VerifyReport

TARGETS = ("hot", "cold", "all")


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"--{name} must be a date YYYY-MM-DD, not {value!r}") from exc


def event_selection(
    since: str | None = None,
    until: str | None = None,
    tenant: str | None = None,
    event_type: str | None = None,
) -> Selection:
    """Which events a tool covers: event days YYYY-MM-DD (inclusive), tenant, event type."""
    from sinks.objects.reader import Selection

    return Selection(_date(since, "since"), _date(until, "until"), tenant, event_type)


def read_checkpoints(
    kafka: KafkaSettings, registry: RegistrySettings, topic: str
) -> list[dict[str, Any]]:
    """Every record of the checkpoints topic, decoded (none if the topic does not exist)."""
    from sealstream.follow import read_to_end
    from sinks.service import registry_decoder

    decoder = registry_decoder(registry)
    try:
        return [decoder.decode(m.value() or b"")[1] for m in read_to_end(kafka, topic)]
    except LookupError:
        return []


def _limit(report: VerifyReport, target: str) -> None:
    """Keep only what concerns ``target`` (hot or cold) and the checkpoints."""
    report.findings = [f for f in report.findings if f.store in (target, "checkpoints")]
    report.chains = {k: v for k, v in report.chains.items() if k.startswith(f"{target}:")}
    if target == "hot":
        report.checked["cold"] = 0
    report.drift = []


def verify(
    settings: Settings,
    target: str = "all",
    since: str | None = None,
    until: str | None = None,
    tenant: str | None = None,
    event_type: str | None = None,
    token: str | None = None,
    feedback: Feedback = SILENT,
) -> VerifyReport:
    """Verify ``target`` (hot, cold or all) for the selected events; ``token`` is an auditor
    JWT for the ClickHouse sink's endpoint. A filtered run checks no chain for gaps."""
    from sealstream.keys import load_hmac_keyring
    from sinks.clickhouse.access import HotUnavailable, hot_reader
    from sinks.objects.store import ObjectStore
    from sinks.service import registry_decoder
    from sinks.verify import (
        VerifyReport,
        checkpoint_anchors,
        cold_entries,
        hot_entries,
        read_hot,
        settled_offsets,
        settled_seqs,
        sink_dead_letters,
    )
    from sinks.verify import verify as run_verify

    if target not in TARGETS:
        raise UsageError("target must be hot, cold or all")
    selection = event_selection(since, until, tenant, event_type)
    complete = selection == type(selection)()
    keys = load_hmac_keyring(settings.keys)
    report = VerifyReport()
    kafka, registry, sink = settings.kafka, settings.registry, settings.sink
    anchors = checkpoint_anchors(
        read_checkpoints(kafka, registry, sink.checkpoints_topic), keys, report
    )
    objects = settings.objects
    settled = settled_offsets(kafka, sink)  # before reading: what both sinks had stored
    decoder = registry_decoder(registry)
    horizon = None if settled is None else settled_seqs(kafka, sink.signed_topic, settled, decoder)
    dead = sink_dead_letters(kafka, sink.dead_letter_topic, decoder) if complete else None
    with feedback.bars() as bars:
        hot = None
        try:
            reader, where = hot_reader(settings.clickhouse, token)
            advance = bars.task(f"hot rows ({where})")
            hot = hot_entries(read_hot(reader, selection, advance))
        except HotUnavailable as exc:
            if target != "cold":
                raise Unavailable(str(exc)) from exc
            feedback.warn(f"hot store not read ({exc}); routing holes cannot be explained")
        advance = bars.task("cold records")
        cold = cold_entries(ObjectStore(objects), objects.prefix, selection, report, advance)
        run_verify(hot, cold, keys, anchors, complete, report, settled, horizon, dead)
    if target != "all":
        _limit(report, target)
    summary = {
        "target": target,
        "complete": complete,
        "ok": report.ok,
        **report.by_kind(),
        "checked": report.checked,
    }
    actions.record(settings, "verify", summary, report.ok, feedback=feedback)
    return report
