"""``sealstream replay cold``: rebuild the hot store from the cold store (disaster recovery).

Every selected file is checked against its manifest and every record's payload hashes and
signature are recomputed; what fails is reported and not inserted. Records routed to cold only
stay out of the hot store, as the sink would have left them. Event ids already present
(``events_by_id``) are skipped, and each file is inserted with a deduplication token derived
from its path and hash, so an interrupted or repeated backfill inserts nothing twice.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro

from sealstream.integrity import CONTENT_HASH, HOT_CONTENT_HASH, Problem, check_entry
from sealstream.keys import HmacKeyring
from sinks.clickhouse.rows import EVENT_COLUMNS, event_row
from sinks.objects.reader import ColdFileContent, Selection, iter_cold
from sinks.objects.store import ObjectStore


@dataclass(frozen=True)
class _Coordinates:
    """What ``event_row`` reads from a Kafka message, restored from a cold file."""

    _topic: str
    _partition: int
    _offset: int
    _size: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return b"\0" * self._size  # only its length is used (the ``bytes`` column)

    def headers(self) -> list[tuple[str, bytes]]:
        # a cold file keeps the signed record, not its headers: a row rebuilt from it has no
        # trace context (empty trace_id and span_id; docs/tracing.md)
        return []


@dataclass
class BackfillReport:
    files: int = 0
    bad_files: list[dict[str, str]] = field(default_factory=list)
    bad_records: list[dict[str, Any]] = field(default_factory=list)
    inserted: int = 0
    present: int = 0
    cold_only: int = 0
    by_day: dict[tuple[str, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: {"cold": 0, "inserted": 0, "present": 0})
    )

    @property
    def ok(self) -> bool:
        return not self.bad_files and not self.bad_records

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": self.files,
            "inserted": self.inserted,
            "already_present": self.present,
            "cold_only_skipped": self.cold_only,
            "bad_files": self.bad_files,
            "bad_records": self.bad_records,
            "reconciliation": [
                {"tenant": t, "day": d, **v} for (t, d), v in sorted(self.by_day.items())
            ],
        }


def _wire_size(record: dict[str, Any], schema: Any) -> int:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return 5 + len(buf.getvalue())  # magic byte and schema id, as on the topic


def backfill(
    client: Any,
    database: str,
    store: ObjectStore,
    prefix: str,
    selection: Selection,
    keys: HmacKeyring,
    progress: Callable[[str], None] | None = None,
) -> BackfillReport:
    """Insert the selected cold records the hot store lacks (see the module docstring)."""
    report = BackfillReport()
    for content in iter_cold(store, prefix, selection):
        report.files += 1
        if progress is not None:
            progress(content.path)
        fatal = [d for k, d in content.problems if k == Problem.MODIFIED]
        if fatal or content.manifest is None:
            report.bad_files.append(
                {"path": content.path, "problem": "; ".join(fatal) or "no manifest"}
            )
            continue
        candidates = _candidates(content, keys, report)
        present = _present(client, database, [r["event_id"] for r, _ in candidates])
        rows = _rows(content, content.manifest, candidates, present, report)
        if rows:
            client.insert(
                f"{database}.events",
                rows,
                column_names=EVENT_COLUMNS,
                settings={
                    "insert_deduplication_token": f"cold-backfill/{content.manifest['sha256']}",
                    "deduplicate_blocks_in_dependent_materialized_views": 1,
                },
            )
            report.inserted += len(rows)
    return report


def _candidates(
    content: ColdFileContent, keys: HmacKeyring, report: BackfillReport
) -> list[tuple[dict[str, Any], int]]:
    """The file's records meant for the hot store whose hashes and signature verify, with
    their offsets; the others are counted (routed to cold only) or reported (bad)."""
    candidates: list[tuple[dict[str, Any], int]] = []
    for index, (record, offset) in enumerate(zip(content.records, content.offsets, strict=True)):
        copies = {
            CONTENT_HASH: record.get("payload_json"),
            HOT_CONTENT_HASH: record.get("hot_payload_json"),
        }
        problems = check_entry(record, keys, stored_copies=copies)
        if problems:
            report.bad_records.append(
                {
                    "location": f"{content.path}#{index}",
                    "event_id": record["event_id"],
                    "problems": [f"{k.value}: {d}" for k, d in problems],
                }
            )
            continue
        if record["route"] == "cold":
            report.cold_only += 1
            continue
        candidates.append((record, offset))
    return candidates


def _present(client: Any, database: str, ids: list[Any]) -> set[str]:
    """Which of ``ids`` the hot store already holds (``events_by_id``)."""
    if not ids:
        return set()
    return {
        str(row[0])
        for row in client.query(
            f"SELECT event_id FROM {database}.events_by_id WHERE event_id IN {{ids:Array(String)}}",
            parameters={"ids": ids},
        ).result_rows
    }


def _rows(
    content: ColdFileContent,
    manifest: dict[str, Any],
    candidates: list[tuple[dict[str, Any], int]],
    present: set[str],
    report: BackfillReport,
) -> list[Any]:
    """The hot rows of the candidates not yet present, counted per tenant and day."""
    rows = []
    for record, offset in candidates:
        day = dt.datetime.fromtimestamp(record["occurred_at"] / 1000, tz=dt.UTC).date().isoformat()
        counts = report.by_day[(str(record["tenant"]), day)]
        counts["cold"] += 1
        if record["event_id"] in present:
            report.present += 1
            counts["present"] += 1
            continue
        coords = _Coordinates(
            str(manifest["topic"]),
            int(manifest["partition"]),
            offset,
            _wire_size(record, content.schema),
        )
        rows.append(event_row(record, coords))  # type: ignore[arg-type]
        counts["inserted"] += 1
    return rows
