"""Tampering ``verify`` must name: payload copies that are no JSON any more, a chain's tail cut
off after (or across) its last signed checkpoint, an entry deleted from one store only, and
stored values of the wrong shape. Each case says where: store, chain, seq, event id, location.

Cold entries go through real Avro files (rewritten like an attacker who also fixes the
manifest); hot entries through ``hot_entries`` from rows shaped as ``HOT_COLUMNS`` selects them.
The embedded engine's own part is at the end, in a child process (it belongs to one process).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

from schemas.samples import signed_chain
from sealstream.integrity import ChainHead
from sealstream.keys import HmacKeyring
from sealstream.settings import ObjectStoreSettings
from sinks.objects.files import MANIFEST_SUFFIX, read_file
from sinks.objects.reader import Selection
from sinks.objects.sink import ColdStore
from sinks.objects.store import ObjectStore
from sinks.verify import (
    Entry,
    Located,
    VerifyReport,
    cold_entries,
    cold_entry,
    hot_entries,
    verify,
)
from tests.unit.test_sinks_parts import SIGNED, batch_of, codec

KEYS = HmacKeyring("k1", {"k1": b"k" * 32})
CHAIN = "events.raw/0"


NOT_SELECTED = {
    "payload_json", "hot_payload_json", "schema_id", "source_topic", "source_partition",
    "source_offset", "occurred_at", "received_at", "signed_at",
}  # fmt: skip


def hot_row(record: dict[str, Any], offset: int) -> dict[str, Any]:
    """A record as ``HOT_COLUMNS`` reads it back from the events table."""
    row = {k: v for k, v in record.items() if k not in NOT_SELECTED}
    row.update(
        occurred_ms=record["occurred_at"],
        received_ms=record["received_at"],
        signed_ms=record["signed_at"],
        payload=record["hot_payload_json"],
        kafka_topic="events.signed",
        kafka_partition=0,
        kafka_offset=offset,
    )
    return row


class Stores:
    """One partition's signed records in both stores, as the sinks write them."""

    def __init__(self, root: Path, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.settings = ObjectStoreSettings(url=str(root / "objects"), prefix="events")
        self.root = Path(self.settings.url)
        _, decoder = codec()
        ColdStore(ObjectStore(self.settings), self.settings, decoder).write(batch_of(records))
        self.rows = [hot_row(r, i) for i, r in enumerate(records) if r["route"] != "cold"]
        self.schema = copy.deepcopy(SIGNED)  # the writer schema of rewritten files

    def hot(self, keep: Callable[[dict[str, Any]], bool] = lambda row: True) -> list[Entry]:
        return hot_entries(copy.deepcopy([r for r in self.rows if keep(r)]))

    def cold(self, report: VerifyReport, selection: Selection | None = None) -> list[Entry]:
        return cold_entries(ObjectStore(self.settings), "events", selection or Selection(), report)

    def file_of(self, event_id: str) -> tuple[str, int]:
        """(path, record index) of the cold copy of ``event_id``."""
        for path in sorted(self.root.rglob("*.avro")):
            records, _, _ = read_file(path.read_bytes())
            for index, record in enumerate(records):
                if record["event_id"] == event_id:
                    return str(path.relative_to(self.root)), index
        raise LookupError(event_id)

    def rewrite(
        self,
        event_id: str,
        edit: Callable[[dict[str, Any]], dict[str, Any] | None],
        schema_edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[str, int]:
        """Edit (or, returning None, delete) one cold record; the file is re-encoded (with the
        writer schema widened by ``schema_edit``, as rewrites before did) and its manifest fixed
        up."""
        relative, index = self.file_of(event_id)
        path = self.root / relative
        records, offsets, _ = read_file(path.read_bytes())
        edited = edit(copy.deepcopy(records[index]))
        if edited is None:
            del records[index], offsets[index]
        else:
            records[index] = edited
        if schema_edit is not None:
            schema_edit(self.schema)
        buf = io.BytesIO()
        fastavro.writer(
            buf,
            fastavro.parse_schema(copy.deepcopy(self.schema)),
            records,
            codec="deflate",
            metadata={"sealstream.record_offsets": ",".join(str(o) for o in offsets)},
        )
        path.write_bytes(buf.getvalue())
        manifest_path = self.root / (relative + MANIFEST_SUFFIX)
        manifest = json.loads(manifest_path.read_text())
        manifest.update(sha256=hashlib.sha256(buf.getvalue()).hexdigest(), records=len(records))
        manifest_path.write_text(json.dumps(manifest))
        return relative, index


def selected(entry: Entry, selection: Selection) -> bool:
    """What ``hot_sql``'s WHERE selects."""
    if selection == Selection():
        return True
    day = dt.datetime.fromtimestamp(entry.record["occurred_at"] / 1000, tz=dt.UTC).date()
    return selection.matches(
        {"date": day.isoformat(), "tenant": entry.record["tenant"],
         "event_type": entry.record["event_type"]}
    )  # fmt: skip


def run(
    stores: Stores,
    hot: list[Entry] | None = None,
    anchors: dict[str, list[ChainHead]] | None = None,
    selection: Selection | None = None,
) -> VerifyReport:
    """``verify all`` over both stores, filtered like the CLI when ``selection`` is given."""
    selection = selection or Selection()
    report = VerifyReport()
    cold = stores.cold(report, selection)
    hot = [e for e in (stores.hot() if hot is None else hot) if selected(e, selection)]
    return verify(hot, cold, KEYS, anchors or {}, selection == Selection(), report)


def where(report: VerifyReport) -> list[tuple[str, str, str | None, int | None, str | None]]:
    return [(f.store, f.kind, f.chain_id, f.seq, f.event_id) for f in report.findings]


def utc(ms: int) -> str:
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_untouched_stores_are_clean_with_every_route(tmp_path: Path) -> None:
    """The negative control: routing holes are explained, nothing is reported."""
    stores = Stores(tmp_path, signed_chain(12, CHAIN, KEYS, routes=("both", "cold", "hot")))
    report = run(stores)
    assert (report.findings, report.drift) == ([], [])
    assert report.checked == {"hot": 8, "cold": 8}


# -- 1. payload copies that are no JSON any more ---------------------------------------------


def test_invalid_json_in_the_hot_payload_is_found_where_it_is(tmp_path: Path) -> None:
    stores = Stores(tmp_path, signed_chain(6, CHAIN, KEYS))
    target = stores.records[2]
    rows = copy.deepcopy(stores.rows)
    rows[2]["payload"] = target["hot_payload_json"][:-3]  # cut short: not JSON
    report = run(stores, hot=hot_entries(rows))
    assert where(report) == [("hot", "modified", CHAIN, 3, target["event_id"])]
    assert report.findings[0].location == "hot:events events.signed/0@2"
    assert "hot_content_sha256" in report.findings[0].detail


def test_invalid_json_in_the_cold_payload_json_is_found_where_it_is(tmp_path: Path) -> None:
    stores = Stores(tmp_path, signed_chain(6, CHAIN, KEYS))
    target = stores.records[3]
    relative, index = stores.rewrite(
        target["event_id"], lambda r: {**r, "payload_json": r["payload_json"] + "}"}
    )
    report = run(stores)
    assert where(report) == [("cold", "modified", CHAIN, 4, target["event_id"])]
    assert report.findings[0].location == f"{relative}#{index}"
    assert "content_sha256" in report.findings[0].detail


def test_invalid_json_in_the_cold_hot_payload_json_is_found_where_it_is(tmp_path: Path) -> None:
    stores = Stores(tmp_path, signed_chain(6, CHAIN, KEYS))
    target = stores.records[1]
    relative, index = stores.rewrite(
        target["event_id"], lambda r: {**r, "hot_payload_json": '{"n":1,"email":"pii'}
    )
    report = run(stores)
    assert where(report) == [("cold", "modified", CHAIN, 2, target["event_id"])]
    assert report.findings[0].location == f"{relative}#{index}"
    assert "hot_content_sha256" in report.findings[0].detail


def test_payload_text_is_hashed_as_stored_not_reformatted(tmp_path: Path) -> None:
    """Valid JSON that means the same but is not the bytes that were hashed is an edit too."""
    stores = Stores(tmp_path, signed_chain(4, CHAIN, KEYS))
    target = stores.records[0]
    spaced = json.dumps(json.loads(target["payload_json"]), sort_keys=True)  # ", " and ": "
    stores.rewrite(target["event_id"], lambda r: {**r, "payload_json": spaced})
    assert where(run(stores)) == [("cold", "modified", CHAIN, 1, target["event_id"])]


# -- 2. the tail of a chain --------------------------------------------------------------------


def test_a_tail_cut_off_after_the_last_checkpoint_is_reported_as_unanchored(
    tmp_path: Path,
) -> None:
    records = signed_chain(10, CHAIN, KEYS, routes=("both",))
    kept = records[:8]  # the two newest deleted from both stores
    other = signed_chain(3, "events.raw/1", KEYS, routes=("hot",))  # never checkpointed
    stores = Stores(tmp_path, kept)
    report = VerifyReport()
    cold = stores.cold(report)
    hot = stores.hot()
    # the second chain's entries, straight from memory
    hot += [
        Entry(r, "hot", "-", (1, i), None, json.loads(r["hot_payload_json"]))
        for i, r in enumerate(other)
    ]
    anchors = {CHAIN: [ChainHead(3, records[2]["hash"]), ChainHead(6, records[5]["hash"])]}
    verify(hot, cold, KEYS, anchors, True, report)
    assert (report.findings, report.drift) == ([], [])  # information, not a finding
    for store in ("hot", "cold"):
        chain = report.chains[f"{store}:{CHAIN}"]
        assert chain["checkpoint_seq"] == 6 and chain["last_seq"] == 8
        assert chain["after_checkpoint"] == 2
        assert chain["unanchored_since"] == utc(records[6]["signed_at"])
    lone = report.chains["hot:events.raw/1"]
    assert (lone["checkpoint_seq"], lone["after_checkpoint"]) == (None, 3)
    assert lone["unanchored_since"] == utc(other[0]["signed_at"])

    from rich.console import Console

    from ops.cli import ops

    out = io.StringIO()
    console, ops.console = ops.console, Console(file=out, width=300)
    try:
        ops._print_report(report)
    finally:
        ops.console = console
    text = out.getvalue()
    line = f"tail unanchored since {utc(records[6]['signed_at'])} (2 entries after checkpoint 6)"
    assert f"hot:{CHAIN}: {line}" in text and f"cold:{CHAIN}: {line}" in text
    assert "hot:events.raw/1: tail unanchored since" in text


def test_a_fully_anchored_chain_has_no_unanchored_tail(tmp_path: Path) -> None:
    records = signed_chain(5, CHAIN, KEYS)
    stores = Stores(tmp_path, records)
    report = run(stores, anchors={CHAIN: [ChainHead(5, records[-1]["hash"])]})
    assert report.findings == []
    chain = report.chains[f"hot:{CHAIN}"]
    assert (chain["checkpoint_seq"], chain["after_checkpoint"]) == (5, 0)
    assert chain["unanchored_since"] is None


def test_a_tail_cut_off_across_a_checkpoint_is_missing(tmp_path: Path) -> None:
    records = signed_chain(10, CHAIN, KEYS)
    stores = Stores(tmp_path, records[:7])
    anchors = {CHAIN: [ChainHead(4, records[3]["hash"]), ChainHead(9, records[8]["hash"])]}
    report = run(stores, anchors=anchors)
    assert where(report) == [("hot+cold", "missing", CHAIN, 8, None)]
    for store in ("hot", "cold"):
        chain = report.chains[f"{store}:{CHAIN}"]
        assert (chain["checkpoint_seq"], chain["after_checkpoint"]) == (4, 3)
        assert chain["first_bad_seq"] == 8


def test_a_checkpointed_chain_deleted_whole_from_both_stores_is_missing(tmp_path: Path) -> None:
    records = signed_chain(4, CHAIN, KEYS)
    gone = signed_chain(3, "events.raw/1", KEYS)  # nothing of it left in either store
    stores = Stores(tmp_path, records)
    report = run(stores, anchors={"events.raw/1": [ChainHead(3, gone[-1]["hash"])]})
    assert where(report) == [("hot+cold", "missing", "events.raw/1", 1, None)]


# -- 3. an entry deleted from one store ------------------------------------------------------


def test_an_entry_deleted_from_hot_only_is_named_with_its_cold_copy(tmp_path: Path) -> None:
    records = signed_chain(12, CHAIN, KEYS, routes=("both", "cold"), tenants=("acme",))
    stores = Stores(tmp_path, records)
    # one in the middle, and the newest of the chain (no gap shows in the hot chain)
    for victim in (records[4], records[10]):
        relative, index = stores.file_of(victim["event_id"])
        hot = [e for e in stores.hot() if e.record["event_id"] != victim["event_id"]]
        for selection in (None, Selection(tenant="acme", event_type="payment")):
            report = run(stores, hot=hot, selection=selection)
            assert where(report) == [
                ("hot", "missing", CHAIN, victim["seq"], victim["event_id"])
            ], selection
            assert report.findings[0].location == f"cold:{relative}#{index}"
            assert report.chains[f"hot:{CHAIN}"]["first_bad_seq"] == victim["seq"]


def test_an_entry_deleted_from_cold_only_is_named_with_its_hot_copy(tmp_path: Path) -> None:
    records = signed_chain(12, CHAIN, KEYS, routes=("both", "hot"))
    stores = Stores(tmp_path, records)
    victim = records[6]
    stores.rewrite(victim["event_id"], lambda r: None)
    since = dt.datetime.fromtimestamp(victim["occurred_at"] / 1000, tz=dt.UTC).date()
    for selection in (None, Selection(since=since, tenant=victim["tenant"])):
        report = run(stores, selection=selection)
        assert where(report) == [("cold", "missing", CHAIN, 7, victim["event_id"])], selection
        assert report.findings[0].location == "hot:events events.signed/0@6"
        assert [d["tenant"] for d in report.drift] == [victim["tenant"]]


def test_entries_in_flight_or_routed_to_one_store_are_not_missing(tmp_path: Path) -> None:
    records = signed_chain(10, CHAIN, KEYS, routes=("both", "cold", "hot"))
    stores = Stores(tmp_path, records)
    hot = stores.hot(lambda row: row["kafka_offset"] < 9)  # the hot sink is behind
    report = VerifyReport()
    cold = stores.cold(report)
    verify(hot, cold, KEYS, {}, True, report, settled={0: 8})
    assert (report.findings, report.drift) == ([], [])
    assert report.in_flight == 1  # offset 9: both, in cold only so far


def test_a_checkpoint_past_what_the_sinks_committed_is_in_flight_not_missing(
    tmp_path: Path,
) -> None:
    """The worker checkpoints a chain within seconds; a verify run while events flow reads a
    checkpoint whose entries the sinks have not stored yet. Not a loss: in flight."""
    records = signed_chain(10, CHAIN, KEYS)
    stores = Stores(tmp_path, records[:7])  # the sinks are at offset 7 (seq 7)
    anchors = {CHAIN: [ChainHead(4, records[3]["hash"]), ChainHead(9, records[8]["hash"])]}
    report = VerifyReport()
    cold = stores.cold(report)
    verify(stores.hot(), cold, KEYS, anchors, True, report, {0: 7}, {CHAIN: 7})
    assert (report.findings, report.drift) == ([], [])
    assert report.in_flight >= 1


def test_a_tail_the_sinks_committed_and_no_checkpoint_covers_is_missing(tmp_path: Path) -> None:
    """Kafka still holds what both sinks committed: a tail cut off after the last checkpoint
    (which no checkpoint proves) is a loss when the sinks had committed past it."""
    records = signed_chain(10, CHAIN, KEYS)
    stores = Stores(tmp_path, records[:8])  # 9 and 10 deleted from both stores
    anchors = {CHAIN: [ChainHead(6, records[5]["hash"])]}
    report = VerifyReport()
    cold = stores.cold(report)
    verify(stores.hot(), cold, KEYS, anchors, True, report, {0: 10}, {CHAIN: 10})
    assert where(report) == [("hot+cold", "missing", CHAIN, 9, None)]
    assert "committed its entries up to sequence 10" in report.findings[0].detail


def test_a_gap_past_what_the_sinks_committed_is_in_flight(tmp_path: Path) -> None:
    """Cold stored seq 1..6 and 8; the hot-only entry 7 is not in the hot store yet (its sink
    lags): no loss while it is past what both sinks committed, a loss once it is not."""
    records = signed_chain(8, CHAIN, KEYS, routes=("both",) * 6 + ("hot", "both"))
    stores = Stores(tmp_path, records)
    hot = stores.hot(lambda row: row["kafka_offset"] < 6)
    report = VerifyReport()
    cold = stores.cold(report)
    verify(hot, cold, KEYS, {}, True, report, {0: 6}, {CHAIN: 6})
    assert report.findings == []
    late = VerifyReport()
    cold = stores.cold(late)
    verify(hot, cold, KEYS, {}, True, late, {0: 8}, {CHAIN: 8})
    assert ("hot+cold", "missing", CHAIN, 7, None) in where(late)


# -- 4. stored values of the wrong shape --------------------------------------------------------


def test_malformed_cold_values_are_findings_not_crashes(tmp_path: Path) -> None:
    records = signed_chain(8, CHAIN, KEYS)
    stores = Stores(tmp_path, records)

    def widen(name: str, avro_type: Any) -> Callable[[dict[str, Any]], None]:
        """The field may also hold ``avro_type`` (the file's other records keep theirs)."""

        def edit(schema: dict[str, Any]) -> None:
            for f in schema["fields"]:
                if f["name"] == name:
                    f["type"] = [f["type"], avro_type]

        return edit

    def set_(name: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return lambda r: {**r, name: value}

    cases = [
        (records[1], set_("seq", "two"), widen("seq", "string"), "seq is not an integer"),
        (records[2], set_("occurred_at", 2**62), None, "changed"),
        (records[3], set_("route", None), widen("route", "null"), "route is not text"),
        (records[4], set_("masked_fields", "email"), widen("masked_fields", "string"),
         "masked_fields is not a list"),
        (records[5], set_("payload_json", None), widen("payload_json", "null"),
         "stored payload is missing"),
        (records[6], set_("hot_payload_json", 7), widen("hot_payload_json", "long"),
         "stored hot payload is int, not text"),
    ]  # fmt: skip
    located = {r["event_id"]: stores.rewrite(r["event_id"], e, s) for r, e, s, _ in cases}
    report = run(stores)
    cold = [f for f in report.findings if f.store == "cold" and f.kind == "modified"]
    for record, _, _, detail in cases:
        relative, index = located[record["event_id"]]
        mine = [f for f in cold if f.event_id == record["event_id"]]
        assert mine and {f.location for f in mine} == {f"{relative}#{index}"}, mine
        assert any(detail in f.detail for f in mine), (detail, mine)
    # the record without a usable seq is one finding with no position; its place is a hole
    assert [f.seq for f in cold if f.event_id == records[1]["event_id"]] == [None]
    assert any(f[:4] == ("cold", "missing", CHAIN, 2) for f in where(report))


def test_fields_a_cold_file_does_not_have_at_all_are_findings() -> None:
    """A file written with a writer schema that lacks fields decodes to records without them."""
    record = signed_chain(1, CHAIN, KEYS)[0]
    for name, detail in (("payload_json", "stored payload is missing"),
                         ("hot_payload_json", "stored hot payload is missing"),
                         ("route", "route is not text (missing)"),
                         ("seq", "seq is not an integer (missing)"),
                         ("signature", "signature is not text (missing)")):  # fmt: skip
        damaged = {k: v for k, v in record.items() if k != name}
        report = verify(None, [cold_entry(damaged, "f.avro#0", (0, 0))], KEYS, {}, True,
                        VerifyReport())  # fmt: skip
        assert [f.kind for f in report.findings] == ["modified"], (name, report.findings)
        assert detail in report.findings[0].detail, name


def test_malformed_hot_values_are_findings_not_crashes(tmp_path: Path) -> None:
    records = signed_chain(6, CHAIN, KEYS)
    stores = Stores(tmp_path, records)
    rows = copy.deepcopy(stores.rows)
    rows[1]["seq"] = "x"
    rows[2]["masked_fields"] = None
    rows[3]["payload"] = None
    rows[4]["occurred_ms"] = "not a time"
    rows[5]["kafka_offset"] = "?"
    report = run(stores, hot=hot_entries(rows))
    hot = [f for f in report.findings if f.store == "hot" and f.kind == "modified"]
    for i, detail in ((1, "seq"), (2, "masked_fields"), (3, "hot payload is missing"),
                      (4, "occurred_at")):  # fmt: skip
        assert any(f.event_id == records[i]["event_id"] and detail in f.detail for f in hot), (
            detail,
            hot,
        )
    assert all(isinstance(f, Located) and f.store == "hot" for f in report.findings)


def test_a_markup_like_stored_value_prints(tmp_path: Path) -> None:
    from rich.console import Console

    from ops.cli import ops

    stores = Stores(tmp_path, signed_chain(3, CHAIN, KEYS))
    rows = copy.deepcopy(stores.rows)
    rows[0]["event_id"] = "[/x] [bold"
    report = run(stores, hot=hot_entries(rows))
    assert report.findings
    out = io.StringIO()
    console, ops.console = ops.console, Console(file=out, width=300)
    try:
        ops._print_report(report)
    finally:
        ops.console = console
    assert "[/x] [bold" in out.getvalue()


# -- the embedded engine ------------------------------------------------------------------------

SCRIPT = """
import json, sys
from schemas.samples import signed_chain
from sealstream.integrity import ChainHead
from sealstream.keys import HmacKeyring
from sealstream.settings import ClickHouseSettings, ObjectStoreSettings, SinkSettings
from sinks.clickhouse.access import direct_reader
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
from sinks.clickhouse.sink import ClickHouseStore
from sinks.objects.reader import Selection
from sinks.objects.sink import ColdStore
from sinks.objects.store import ObjectStore
from sinks.verify import VerifyReport, cold_entries, hot_entries, read_hot, verify
from tests.unit.test_sinks_parts import batch_of, codec

root = sys.argv[1]
KEYS = HmacKeyring("k1", {"k1": b"k" * 32})
records = signed_chain(12, "events.raw/0", KEYS, tenants=("acme",))
settings = ClickHouseSettings(embedded_dir=root + "/ch")
client = connect(settings)
migrate(client, settings)
db = settings.database
_, decoder = codec()
ClickHouseStore(client, settings, SinkSettings(), decoder, "g", {}).write(batch_of(records))
objects = ObjectStoreSettings(url=root + "/objects", prefix="events")
ColdStore(ObjectStore(objects), objects, decoder).write(batch_of(records))
edited, deleted = records[3]["event_id"], records[7]["event_id"]
client.command(
    f"ALTER TABLE {db}.events UPDATE payload = '{{\\"n\\":3,' WHERE event_id = '{edited}' "
    "SETTINGS mutations_sync = 2"
)
client.command(
    f"ALTER TABLE {db}.events DELETE WHERE event_id = '{deleted}' SETTINGS mutations_sync = 2"
)
anchors = {"events.raw/0": [ChainHead(5, records[4]["hash"])]}
out = {}
for name, selection in {"all": Selection(), "tenant": Selection(tenant="acme")}.items():
    report = VerifyReport()
    cold = cold_entries(ObjectStore(objects), "events", selection, report)
    hot = hot_entries(read_hot(direct_reader(client, db), selection))
    verify(hot, cold, KEYS, anchors, selection == Selection(), report)
    out[name] = report.as_dict()
out["records"] = records
print(json.dumps(out))
"""


def test_the_embedded_hot_store_tampered_and_cut(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    records = out.pop("records")
    for name, report in out.items():
        got = [
            (f["store"], f["kind"], f["seq"], f["event_id"], f["location"].split(" ")[0])
            for f in report["findings"]
        ]
        assert [g[:4] for g in got] == [
            ("hot", "modified", 4, records[3]["event_id"]),
            ("hot", "missing", 8, records[7]["event_id"]),
        ], name
        assert got[0][4] == "hot:events", name
        assert got[1][4].startswith("cold:events/tenant=acme/event_type=page_view/"), name
    chain = out["all"]["chains"]["hot:events.raw/0"]
    assert (chain["checkpoint_seq"], chain["last_seq"], chain["after_checkpoint"]) == (5, 12, 6)
    since = dt.datetime.fromtimestamp(records[5]["signed_at"] / 1000, tz=dt.UTC)
    assert chain["unanchored_since"] == since.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


class _OneRow:
    """A trail source holding one hot row (as events_by_id returns it) and nothing else."""

    name = "test"

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    def event(self, event_id: str) -> dict[str, Any] | None:
        return self.row if event_id == self.row["event_id"] else None

    def receipt(self, event_id: str, tenant: str) -> dict[str, Any] | None:
        return None

    def decisions(self, tenant: str, request_id: str, received_at: str) -> list[dict[str, Any]]:
        return []

    def dead_letters(self, event_id: str) -> list[dict[str, Any]]:
        return []

    def replays(self, event_id: str) -> list[dict[str, Any]]:
        return []


def test_the_audit_trail_of_an_event_whose_hot_payload_is_not_json_fails_its_check() -> None:
    from sinks.trail import audit_trail

    record = signed_chain(1, CHAIN, KEYS)[0]

    def text(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    row = {
        **{k: v for k, v in record.items() if k not in NOT_SELECTED},
        "occurred_at": text(record["occurred_at"]),
        "received_at": text(record["received_at"]),
        "signed_at": text(record["signed_at"]),
        "stored_at": text(record["signed_at"]),
        "payload": record["hot_payload_json"],
        "source_topic": "events.raw", "source_partition": 0, "source_offset": 0,
        "kafka_topic": "events.signed", "kafka_partition": 0, "kafka_offset": 0,
    }  # fmt: skip
    clean = audit_trail(_OneRow(row), record["event_id"], KEYS)
    assert clean is not None and clean["processing"]["signature_valid"] is True
    broken = audit_trail(_OneRow({**row, "payload": '{"n": 0, "email"'}), record["event_id"], KEYS)
    assert broken is not None and broken["processing"]["signature_valid"] is False  # no crash
    assert any("hot" in p for p in broken["processing"]["problems"])


def test_an_entry_a_sink_dead_lettered_is_named_so_not_missing(tmp_path: Path) -> None:
    """Both sinks committed it, neither store has it: in the ClickHouse sink's dead letters
    (a row the store refused), it is reported where it is, not as lost."""
    records = signed_chain(4, CHAIN, KEYS, routes=("both", "both", "both", "hot"))
    stores = Stores(tmp_path, records[:3])  # the hot-only fourth went to the dead letters
    report = VerifyReport()
    cold = stores.cold(report)
    dlq = {(CHAIN, 4): "events.signed.dlq 0@7 (unwritable)"}
    verify(stores.hot(), cold, KEYS, {}, True, report, {0: 4}, {CHAIN: 4}, dlq)
    assert [(f.store, f.kind, f.seq, f.location) for f in report.findings] == [
        ("hot+cold", "dead_lettered", 4, "events.signed.dlq 0@7 (unwritable)")
    ]
    unnamed = VerifyReport()
    cold = stores.cold(unnamed)
    verify(stores.hot(), cold, KEYS, {}, True, unnamed, {0: 4}, {CHAIN: 4})
    assert [(f.kind, f.seq) for f in unnamed.findings] == [("missing", 4)]


def test_a_dead_letter_that_leaves_no_hole_is_named_too(tmp_path: Path) -> None:
    """The only entry of a chain nobody's walk expects (its chain is not settled: records of
    another chain came after it on its partition) was once not reported at all. Every sink dead
    letter the hot store does not hold is named; one it holds (replayed since) is not."""
    records = signed_chain(3, CHAIN, KEYS, routes=("both", "both", "both"))
    stores = Stores(tmp_path, records)
    dlq = {
        ("forged/0", 1): "events.signed.dlq 0@3 (unwritable)",
        (CHAIN, 2): "events.signed.dlq 0@1 (unwritable)",  # replayed: hot has it now
    }
    report = VerifyReport()
    cold = stores.cold(report)
    verify(stores.hot(), cold, KEYS, {}, True, report, {0: 3}, {CHAIN: 3}, dlq)
    assert [(f.store, f.kind, f.chain_id, f.seq, f.location) for f in report.findings] == [
        ("hot", "dead_lettered", "forged/0", 1, "events.signed.dlq 0@3 (unwritable)")
    ]
