"""The audit index's entry layout: bodies are value arrays read back as rows by column name,
datetimes rendered as ClickHouse renders them; an index of another layout is not complete (so
the sink rebuilds it before it is used)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from sinks.clickhouse.trail_index import COLUMNS, LAYOUT, TrailIndex, _iso_text, as_text, entries


def _decision_row(**given: object) -> list[object]:
    row: dict[str, object] = {name: "" for name in COLUMNS["decision"]}
    row.update(kafka_partition=0, kafka_offset=9, **given)
    return [row[name] for name in COLUMNS["decision"]]


def test_a_body_holds_values_only_and_reads_back_by_column(tmp_path: Path) -> None:
    index = TrailIndex(tmp_path / "index.sqlite3")
    when = dt.datetime(2026, 12, 1, 20, 15, 7, 123000, tzinfo=dt.UTC)
    row = _decision_row(tenant="acme", request_id="r-1", decided_at=when, action="publish")
    [entry] = list(entries("decision", [row]))
    assert b"decided_at" not in entry[4] and b"publish" in entry[4]
    index.add([entry])
    [(kind, ident, body)] = index.get("request:acme/r-1")
    assert (kind, ident) == ("decision", "/0/9")
    assert body["action"] == "publish"
    assert body["decided_at"] == "2026-12-01 20:15:07.123"  # as ClickHouse renders it
    assert set(body) == set(COLUMNS["decision"])


def test_an_index_of_another_layout_is_not_complete(tmp_path: Path) -> None:
    index = TrailIndex(tmp_path / "index.sqlite3")
    assert not index.complete
    index.rebuild(lambda table, columns: [])
    assert index.complete
    # written complete by a release before layouts ('1': it reads only that, so it sees ours
    # as not complete and rebuilds too), or for other columns
    for marker in ("1", LAYOUT + "-other"):
        index._db.execute("UPDATE meta SET value = ? WHERE name = 'complete'", (marker,))
        assert not index.complete
    index.rebuild(lambda table, columns: [])
    assert index.complete


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2026, 12, 1, 20, 15, 7, 123000, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 1, 20, 15, 7, tzinfo=dt.UTC),  # orjson leaves the fraction out
        dt.datetime(2026, 12, 1, 20, 15, 7, 999999),  # naive: UTC
        dt.datetime(2026, 12, 1, 21, 15, 7, 5000, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ],
)
def test_a_stored_datetime_reads_back_as_clickhouse_renders_it(moment: dt.datetime) -> None:
    written = orjson.dumps(moment, option=orjson.OPT_NAIVE_UTC).decode().strip('"')
    assert _iso_text(written) == as_text(moment)


def test_the_datetime_columns_are_the_ones_rows_hold_datetimes_in() -> None:
    """A datetime column missing from DATETIMES would read back from the index in ISO 8601,
    unlike ClickHouse's rendering: every datetime the sink's rows hold must be listed."""
    from schemas.samples import signed_chain
    from sealstream.keys import HmacKeyring
    from sinks.clickhouse import rows
    from sinks.clickhouse.trail_index import DATETIMES

    class Message:
        def topic(self) -> str:
            return "t"

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return 1

        def value(self) -> bytes:
            return b"v"

        def key(self) -> bytes:
            return b"events.raw.dlq/0/1"

        def headers(self) -> list[tuple[str, bytes]]:
            return [("dlq.reason", b"x"), ("dlq.stage", b"s"), ("event_id", b"e")]

        def timestamp(self) -> tuple[int, int]:
            return (1, 1_764_000_000_000)

    [event] = signed_chain(1, "events.raw/0", HmacKeyring("k1", {"k1": b"k" * 32}))
    decision = {
        **{name: "x" for name in ("subject", "tenant", "event_tenant", "action", "decision")},
        **{name: "x" for name in ("reason_code", "policy_version", "request_id")},
        "correlation_id": "c",
        "decided_at": 1_764_000_000_000,
    }
    replay = b'{"status": "replayed", "at_ms": 1764000000000, "event_id": "e"}'

    class Replay(Message):
        def value(self) -> bytes:
            return replay

    built = {
        "event": rows.event_row(event, Message()),
        "decision": rows.decision_row(decision, Message()),
        "dead_letter": rows.dead_letter_row(Message()),
        "replay": rows.replay_row(Replay()),
    }
    for kind, row in built.items():
        assert row is not None
        held = {c for c, v in zip(COLUMNS[kind], row, strict=False) if isinstance(v, dt.datetime)}
        assert held == set(DATETIMES[kind]) - {"stored_at"}, kind
