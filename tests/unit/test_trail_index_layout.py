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
    # an index written before this layout (no layout recorded) or for other columns
    index._db.execute("DELETE FROM meta WHERE name = 'layout'")
    assert not index.complete
    index._db.execute("INSERT INTO meta VALUES ('layout', ?)", (LAYOUT + "-other",))
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
