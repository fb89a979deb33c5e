"""The audit trail's hot path: a local index of what the ClickHouse sink stored, by event id.

``sealstream audit`` needs one event's row, its receipt, the authorization decisions of its
request, its dead letters and their replays. On ClickHouse that is one point read per table,
and each read costs about 2 ms on the embedded engine however the table is laid out (query
set-up, not storage: a ``SELECT 1`` alone takes 0.6-0.8 ms; benchmarks/results/ops.md).
So the sink, after each batch ClickHouse accepted, writes the same rows here too: one SQLite
file (the standard library's, WAL mode) with one row per stored entry, keyed by event id (by
tenant and request id for decisions), its body the row's values as a JSON array. A trail is
then two primary-key reads. Size: see benchmarks/results/ops.md.

Why SQLite and not another ClickHouse table: it answers a point read in microseconds inside
the process, needs no server, and is only ever a copy. ClickHouse stays the store of record:

* the index is derived: when it is missing or was invalidated (``replay cold`` writes
  ClickHouse directly) the sink rebuilds it from the ClickHouse tables before consuming;
* writes are idempotent (a rebuilt batch rewrites the same keys), and come after the
  ClickHouse insert, so the index never holds a row ClickHouse refused;
* it expires rows with the hot retention, like the ClickHouse TTL;
* ``verify`` never reads it; ``sealstream audit --from-store`` reads ClickHouse itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from sinks.clickhouse.rows import (
    DEAD_LETTER_COLUMNS,
    DECISION_COLUMNS,
    EVENT_COLUMNS,
    RECEIPT_COLUMNS,
    REPLAY_COLUMNS,
)

# kind -> (ClickHouse table, its columns as inserted)
TABLES: dict[str, tuple[str, list[str]]] = {
    "event": ("events", EVENT_COLUMNS),
    "receipt": ("receipts", RECEIPT_COLUMNS),
    "decision": ("audit_decisions", DECISION_COLUMNS),
    "dead_letter": ("dead_letters", DEAD_LETTER_COLUMNS),
    "replay": ("dlq_replays", REPLAY_COLUMNS),
}
KIND_OF_TABLE = {table: kind for kind, (table, _) in TABLES.items()}

Entry = tuple[str, str, str, int, bytes]  # key, kind, ident, at_ms, body

# An entry's body is a JSON array of its row's values in ``TABLES[kind]``'s column order (plus
# ``stored_at`` for events), datetimes in ISO 8601: no column names, which were a third of an
# event's entry, and datetimes written by orjson itself, not by a Python hook per value. They
# are rendered as ClickHouse renders them (``as_text``) when read back, which is rare. An index
# of another layout (older, or columns changed by a migration) is not complete (``complete``),
# so the sink rebuilds it from ClickHouse before it consumes.
COLUMNS: dict[str, list[str]] = {
    kind: columns + (["stored_at"] if kind == "event" else [])
    for kind, (_, columns) in TABLES.items()
}
DATETIMES: dict[str, tuple[str, ...]] = {
    "event": ("occurred_at", "received_at", "signed_at", "stored_at"),
    "receipt": (),
    "decision": ("decided_at",),
    "dead_letter": ("failed_at",),
    "replay": ("at",),
}
LAYOUT = "array-v1:" + hashlib.sha256(orjson.dumps(COLUMNS)).hexdigest()[:16]


def _pack(values: list[Any]) -> bytes:
    # Not compressed: zlib took longer than everything else of a row here (~60 us for
    # 1.2 KiB of mostly hex digests) for a 2x smaller file; lz4 saved only a quarter.
    return orjson.dumps(values, option=orjson.OPT_NAIVE_UTC)


def _unpack(kind: str, body: bytes) -> dict[str, Any]:
    row = dict(zip(COLUMNS[kind], orjson.loads(body), strict=False))
    for name in DATETIMES[kind]:
        value = row.get(name)
        if isinstance(value, str):
            row[name] = _iso_text(value)
    return row


def _iso_text(value: str) -> str:
    """ClickHouse's rendering of a datetime orjson wrote: sliced when it is UTC, as the
    sink's are (``2026-12-01T20:15:07.123000+00:00`` or without the fraction), so a trail
    read pays no datetime parsing."""
    if len(value) in (25, 32) and value.endswith("+00:00") and value[10] == "T":
        return f"{value[:10]} {value[11:19]}.{value[20:23] if value[19] == '.' else '000'}"
    return _datetime_text(dt.datetime.fromisoformat(value))


def _datetime_text(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(" ", "milliseconds")


def as_text(value: Any) -> Any:
    """ClickHouse's JSON rendering of a value, so both trail sources read alike."""
    if isinstance(value, dt.datetime):
        return _datetime_text(value)
    if isinstance(value, (list, tuple)):
        return [as_text(v) for v in value]
    if isinstance(value, dict):
        return {str(k): as_text(v) for k, v in value.items()}
    return value


def _at_ms(value: Any) -> int:
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return int(when.timestamp() * 1000)
    return int(time.time() * 1000)


def request_key(tenant: str, request_id: str) -> str:
    return f"request:{tenant}/{request_id}"


def _position(kind: str, *names: str) -> list[int]:
    return [COLUMNS[kind].index(name) for name in names]


def entries(kind: str, rows: Iterable[list[Any] | tuple[Any, ...]]) -> Iterator[Entry]:
    """Index entries of rows in ``TABLES[kind]``'s column order (as the sink inserts them or
    as a rebuild selects them back; a rebuild adds ``stored_at`` to events)."""
    width = len(TABLES[kind][1])
    topic, partition, offset = _position(kind, "kafka_topic", "kafka_partition", "kafka_offset")

    def coords(row: list[Any] | tuple[Any, ...]) -> str:
        return f"{row[topic]}/{row[partition]}/{row[offset]}"

    if kind == "event":
        event_id, occurred_at = _position(kind, "event_id", "occurred_at")
        stored_at = dt.datetime.now(dt.UTC)
        for row in rows:
            values = list(row) if len(row) > width else [*row, stored_at]
            yield row[event_id], kind, "", _at_ms(row[occurred_at]), _pack(values)
    elif kind == "receipt":
        event_id, tenant = _position(kind, "event_id", "tenant")
        for row in rows:
            yield row[event_id], kind, row[tenant], _at_ms(None), _pack(list(row))
    elif kind == "decision":
        tenant, request_id, decided_at = _position(kind, "tenant", "request_id", "decided_at")
        for row in rows:
            key = request_key(row[tenant], row[request_id])
            yield key, kind, coords(row), _at_ms(row[decided_at]), _pack(list(row))
    elif kind == "dead_letter":
        event_id, failed_at = _position(kind, "event_id", "failed_at")
        for row in rows:
            if row[event_id]:
                yield row[event_id], kind, coords(row), _at_ms(row[failed_at]), _pack(list(row))
    elif kind == "replay":
        event_id, marker, at = _position(kind, "event_id", "marker", "at")
        for row in rows:
            if row[event_id]:
                yield row[event_id], kind, row[marker], _at_ms(row[at]), _pack(list(row))


class TrailIndex:
    """One SQLite file; safe to share between the sink's threads (one connection, a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a power cut may lose the last commits, never corrupt; the sink rewrites a
        # batch it did not commit, and a lost index write is repaired by a rebuild.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries (key TEXT NOT NULL, kind TEXT NOT NULL, "
            "ident TEXT NOT NULL, at_ms INTEGER NOT NULL, body BLOB NOT NULL, "
            "PRIMARY KEY (key, kind, ident))"  # rowid table: bodies are ~1 KiB (WITHOUT ROWID
        )  # suits rows under 1/20 of a page; it doubled the file)
        self._db.execute("CREATE INDEX IF NOT EXISTS entries_at ON entries (at_ms)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )

    # -- state ------------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """True once built from ClickHouse (or started with it empty) and not invalidated."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'complete'").fetchone()
        # the layout is the marker's value: a release before layouts (which wrote '1' and
        # reads '1' only) and this one each see the other's index as not complete, so a
        # rollback and an upgrade again both rebuild instead of misreading bodies
        return row is not None and row[0] == LAYOUT

    def invalidate(self) -> None:
        """ClickHouse was written behind the sink's back: rebuild before the next use."""
        with self._lock:
            self._db.execute("DELETE FROM meta WHERE name = 'complete'")

    def rebuild(
        self,
        select: Callable[[str, list[str]], Iterable[list[Any] | tuple[Any, ...]]],
        progress: Callable[[str, int], None] | None = None,
    ) -> dict[str, int]:
        """Refill from ClickHouse: ``select(table, columns)`` yields its rows."""
        counts: dict[str, int] = {}
        with self._lock:
            self._db.execute("DELETE FROM meta WHERE name = 'complete'")
            self._db.execute("DELETE FROM entries")
        for kind, (table, columns) in TABLES.items():
            batch: list[Entry] = []
            counts[kind] = 0
            for entry in entries(kind, select(table, columns)):
                batch.append(entry)
                if len(batch) >= 10_000:
                    counts[kind] += self.add(batch)
                    batch = []
                    if progress:
                        progress(kind, counts[kind])
            counts[kind] += self.add(batch)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('complete', ?)", (LAYOUT,))
        return counts

    # -- writes and reads -------------------------------------------------------------------

    def add(self, batch: Iterable[Entry]) -> int:
        rows = list(batch)
        if rows:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
        return len(rows)

    def expire(self, before_ms: int) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM entries WHERE at_ms < ?", (before_ms,)).rowcount

    def get(self, key: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(kind, ident, body) of every entry under ``key``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, ident, body FROM entries WHERE key = ?", (key,)
            ).fetchall()
        return [(kind, ident, _unpack(kind, body)) for kind, ident, body in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
