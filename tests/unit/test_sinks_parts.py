"""Sink parts without Kafka: batches and pending ranges, rows, cold files, retention, and the
ClickHouse migrations on the embedded engine (the query guard: test_query_guard.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from schemas.catalog import Catalog
from schemas.samples import signed_chain
from schemas.serde import Decoder, Encoder
from sealstream import logs
from sealstream.integrity import walk_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import KafkaSettings, ObjectStoreSettings, SinkSettings
from sinks.clickhouse.rows import EVENT_COLUMNS, dead_letter_row, event_row
from sinks.clickhouse.sink import insert_token
from sinks.objects.files import parse_path, read_records
from sinks.objects.retention import RetentionRules, apply_retention
from sinks.objects.sink import ColdStore
from sinks.objects.store import ObjectStore
from sinks.runner import (
    CONSUMER_FATAL,
    Batch,
    Limits,
    SinkRunner,
    StoreUnavailable,
    _Partition,
    parse_pending,
    pending_metadata,
)

KEYS = HmacKeyring("k1", {"k1": b"k" * 32})


@dataclass
class FakeMessage:
    """What the sinks read from confluent-kafka's ``Message``."""

    _value: bytes | None
    _offset: int
    _topic: str = "events.signed"
    _partition: int = 0
    _headers: list[tuple[str, bytes]] = field(default_factory=list)
    _timestamp: int = 1_700_000_000_000

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return None

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)


SIGNED = Catalog().signed_schema()


def codec() -> tuple[Encoder, Decoder]:
    return Encoder(7, SIGNED), Decoder(lambda i: json.dumps(SIGNED) if i == 7 else None)


def batch_of(records: list[dict[str, Any]], start: int = 0, topic: str = "events.signed") -> Batch:
    encoder, _ = codec()
    batch = Batch(topic, 0)
    for i, record in enumerate(records):
        batch.add(FakeMessage(encoder.encode(record), start + i, topic))  # type: ignore[arg-type]
    return batch


# -- pending ranges and batch boundaries ----------------------------------------------------


def test_pending_metadata_round_trips_and_rejects_other_metadata() -> None:
    assert parse_pending(pending_metadata(12, 40)) == (12, 40)
    for other in (None, "", "something", "sealstream:pending:x-1", "sealstream:pending:5"):
        assert parse_pending(other) is None


def test_a_pending_range_is_rebuilt_exactly_whatever_the_limits() -> None:
    limits = Limits(max_records=2, max_bytes=10**9, max_age_s=0.0)
    part = _Partition(Batch("t", 0), replay_until=4)
    for offset in range(3):
        part.add(FakeMessage(b"x", offset))  # type: ignore[arg-type]
    assert not part.ready(limits, now=1e12)  # over every limit, yet the range is incomplete
    for offset in range(3, 7):
        part.add(FakeMessage(b"x", offset))  # type: ignore[arg-type]
    assert part.ready(limits, now=0)
    assert (part.batch.first, part.batch.last) == (0, 4)
    part.reset()  # after the write: records past the range start the next batch
    assert [m.offset() for m in part.batch.records] == [5, 6]
    assert part.replay_until is None


def test_a_range_whose_last_record_is_gone_closes_at_the_next_offset() -> None:
    part = _Partition(Batch("t", 0), replay_until=9)
    part.add(FakeMessage(b"x", 7))  # type: ignore[arg-type]
    assert not part.ready(Limits(1, 1, 0), now=1e12)
    part.add(FakeMessage(b"x", 11))  # type: ignore[arg-type]
    assert part.ready(Limits(1, 1, 0), now=0)
    assert part.batch.last == 7


def test_limits_close_a_normal_batch_by_records_bytes_or_age() -> None:
    part = _Partition(Batch("t", 0))
    assert not part.ready(Limits(2, 100, 5), now=0)  # empty never flushes
    part.add(FakeMessage(b"x" * 10, 0))  # type: ignore[arg-type]
    started = part.batch.started
    assert not part.ready(Limits(2, 100, 5), now=started)
    assert part.ready(Limits(1, 100, 5), now=started)
    assert part.ready(Limits(2, 10, 5), now=started)
    assert part.ready(Limits(2, 100, 5), now=started + 5)


def test_insert_tokens_are_a_function_of_group_topic_id_and_range() -> None:
    records = signed_chain(3, "events.raw/0", KEYS)
    a, b = batch_of(records), batch_of(records)
    assert insert_token("g", "id1", a) == insert_token("g", "id1", b)
    assert insert_token("g", "id1", a) != insert_token("g", "id2", a)  # topic re-created
    assert insert_token("g", "id1", a) != insert_token("g", "id1", batch_of(records, start=1))


# -- ClickHouse rows -----------------------------------------------------------------------


def test_event_rows_keep_the_masked_copy_and_skip_cold_only_events() -> None:
    hot, cold = signed_chain(2, "c", KEYS, routes=("hot", "cold"))
    message = FakeMessage(b"v" * 10, 5)
    row = event_row(hot, message)  # type: ignore[arg-type]
    assert row is not None
    assert hot["hot_payload_json"] in row and hot["payload_json"] not in row
    stored = dict(zip(EVENT_COLUMNS, row, strict=True))
    assert [stored[c] for c in ("kafka_topic", "kafka_partition", "kafka_offset", "bytes")] == [
        "events.signed", 0, 5, 10,
    ]  # fmt: skip
    assert (stored["trace_id"], stored["span_id"]) == ("", "")  # a record no stage traced
    assert event_row(cold, message) is None  # type: ignore[arg-type]


def test_dead_letter_rows_come_from_headers_and_survive_bad_values() -> None:
    message = FakeMessage(
        b"\x00broken",
        3,
        "events.raw.dlq",
        _headers=[
            ("dlq.reason", b"unknown_schema"),
            ("dlq.stage", b"decode"),
            ("dlq.offset", b"not-a-number"),
            ("dlq.attempts", b"99999999"),
            ("tenant", b"acme"),
        ],
    )
    row = dead_letter_row(message)  # type: ignore[arg-type]
    assert row[0] == dt.datetime.fromtimestamp(1_700_000_000, tz=dt.UTC)  # record time
    assert row[1:3] == ["unknown_schema", "decode"]
    assert row[5] == "acme"
    assert row[9] == 0 and row[10] == 65535


# -- cold files ----------------------------------------------------------------------------


def cold_store(tmp_path: Path, prefix: str = "events") -> ColdStore:
    settings = ObjectStoreSettings(url=str(tmp_path / "objects"), prefix=prefix)
    return ColdStore(ObjectStore(settings), settings, codec()[1])


def test_cold_files_are_deterministic_split_by_bucket_and_carry_a_true_manifest(
    tmp_path: Path,
) -> None:
    records = signed_chain(
        12, "events.raw/0", KEYS, routes=("both", "cold", "hot"), event_types=("payment", "login")
    )
    store = cold_store(tmp_path)
    batch = batch_of(records, start=100)
    files, rejected = store.files(batch)
    assert not rejected
    again, _ = store.files(batch_of(records, start=100))
    built = [f.build(codec()[1].schema(7), "deflate") for f in files]
    assert built == [f.build(codec()[1].schema(7), "deflate") for f in again]  # byte-identical
    stored = [r for f in files for r in f.records]
    assert sorted(r["event_id"] for r in stored) == sorted(
        r["event_id"] for r in records if r["route"] != "hot"
    )
    for cold, (data, manifest_bytes) in zip(files, built, strict=True):
        fields = parse_path(cold.path)
        assert fields is not None and fields["tenant"] == cold.key.tenant
        assert (int(fields["first"]), int(fields["last"])) == (cold.offsets[0], cold.offsets[-1])
        manifest = json.loads(manifest_bytes)
        assert manifest["records"] == len(read_records(data)) == len(cold.records)
        assert manifest["key_ids"] == ["k1"]
    # the files together still hold a verifiable chain segment, in order
    segment = sorted((r for f in files for r in f.records), key=lambda r: r["seq"])
    report = walk_chain("events.raw/0", segment, KEYS, anchor=None)
    assert [f.kind for f in report.findings] == ["missing"] * len(report.findings)


def test_undecodable_records_are_rejected_not_stored(tmp_path: Path) -> None:
    store = cold_store(tmp_path)
    batch = batch_of(signed_chain(2, "c", KEYS))
    batch.add(FakeMessage(b"\x00\x00\x00\x00\x07\xff", 2))  # type: ignore[arg-type]
    batch.add(FakeMessage(b"\x00\x00\x00\x00\x63abc", 3))  # type: ignore[arg-type]
    rejected = store.write(batch)
    assert sorted(r.reason for r in rejected) == ["undecodable", "unknown_schema"]
    assert len(list(store.store.listing())) == 2 * len(store.files(batch)[0])


def test_retention_reports_then_deletes_expired_files_per_rule(tmp_path: Path) -> None:
    store = cold_store(tmp_path)
    day = 86_400_000
    today = dt.date(2026, 11, 22)
    base = int(dt.datetime(2026, 11, 22, tzinfo=dt.UTC).timestamp() * 1000)
    for age, event_type in ((1, "payment"), (40, "payment"), (40, "page_view"), (500, "login")):
        records = signed_chain(
            2, "c", KEYS, start_ms=base - age * day, event_types=(event_type,), tenants=("acme",)
        )
        store.write(batch_of(records, start=age * 10))
    rules = RetentionRules.model_validate(
        {"default_days": 365, "rules": [{"event_type": "page_view", "days": 30}]}
    )
    dry = apply_retention(store.store, "events", rules, delete=False, today=today)
    assert [r[:5] for r in dry.rows()] == [
        ("acme", "login", 365, 1, 2),
        ("acme", "page_view", 30, 1, 2),
    ]
    assert len(list(store.store.listing())) == 8  # a dry run deletes nothing
    done = apply_retention(store.store, "events", rules, delete=True, today=today)
    assert done.as_dict()["removed"] == dry.as_dict()["removed"] and done.kept_files == 2
    left = sorted(p.path for p in store.store.listing())
    assert len(left) == 4 and all("event_type=payment" in p for p in left)


# -- migrations on the embedded engine (in a child: one chDB engine per process) -----------

MIGRATE_SCRIPT = """
import json, sys
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.client import connect
from sinks.clickhouse import migrations as m
s = ClickHouseSettings(embedded_dir=sys.argv[1], hot_retention_days=int(sys.argv[2]))
c = connect(s)
out = {"first": m.migrate(c, s).as_dict(), "second": m.migrate(c, s).as_dict()}
out["tables"] = sorted(r[0] for r in c.query(
    "SELECT name FROM system.tables WHERE database = 'sealstream'").result_rows)
out["short_lived_parts"] = sorted(r[0] for r in c.query(
    "SELECT name FROM system.tables WHERE database = 'sealstream' AND engine LIKE '%MergeTree' "
    "AND name != 'schema_migrations' AND engine_full NOT LIKE '%old_parts_lifetime = 600%'"
).result_rows)
edited = m.Migration(1, "edited", ("SELECT 1",))
m.MIGRATIONS = (edited, *m.MIGRATIONS[1:])
try:
    m.migrate(c, s)
except m.MigrationError as exc:
    out["edited"] = str(exc)
print(json.dumps(out))
"""


def test_migrations_apply_once_follow_the_ttl_setting_and_refuse_edits(tmp_path: Path) -> None:
    def run(days: int) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-c", MIGRATE_SCRIPT, str(tmp_path / "ch"), str(days)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    first = run(30)
    assert first["first"] == {"applied": [1, 2, 3, 4, 5, 6], "already": [], "ttl_changed": []}
    assert first["second"] == {"applied": [], "already": [1, 2, 3, 4, 5, 6], "ttl_changed": []}
    # every table keeps merged-away parts (chDB's default deletes them at once)
    assert first["short_lived_parts"] == []
    assert {"events", "events_by_id", "events_minutely", "dead_letters", "audit_decisions",
            "checkpoints", "schema_migrations"} <= set(first["tables"])  # fmt: skip
    assert "changed after it was applied" in first["edited"]
    later = run(7)
    assert later["first"] == {
        "applied": [], "already": [1, 2, 3, 4, 5, 6], "ttl_changed": ["events", "events_by_id"],
    }  # fmt: skip
    assert later["second"]["ttl_changed"] == []


@pytest.mark.parametrize(
    ("traceparent", "ids"),
    [
        (
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
        ),
        # a later version: its first four fields read the same way
        (
            b"cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more",
            ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
        ),
        (b"00-00000000000000000000000000000000-b7ad6b7169203331-01", ("", "")),  # invalid ids
        (b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", ("", "")),
        (b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", ("", "")),  # upper case
        (b"00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01", ("", "")),  # short
        (b"\xff" * 60, ("", "")),
    ],
)
def test_event_rows_keep_the_trace_context_of_their_record(
    traceparent: bytes, ids: tuple[str, str]
) -> None:
    (hot,) = signed_chain(1, "c", KEYS)
    message = FakeMessage(b"v", 5, _headers=[("tenant", b"acme"), ("traceparent", traceparent)])
    row = event_row(hot, message)  # type: ignore[arg-type]
    assert row is not None
    stored = dict(zip(EVENT_COLUMNS, row, strict=True))
    assert (stored["trace_id"], stored["span_id"]) == ids


def test_malformed_signed_fields_are_a_finding_not_a_crash() -> None:
    from sealstream.integrity import Problem, check_entry

    record = signed_chain(1, "c", KEYS)[0]
    for name, value in (("signature", "zz" * 32), ("prev_hash", "not hex"), ("hash", 7)):
        problems = check_entry({**record, name: value}, KEYS)
        assert problems and problems[0][0] == Problem.MODIFIED, (name, problems)
    assert check_entry(record, KEYS) == []


def test_a_damaged_hash_changes_the_merkle_root_instead_of_crashing_verify() -> None:
    from sinks.verify import merkle_root

    good = [f"{i:064x}" for i in range(5)]
    damaged = [*good[:2], good[2][:6] + "\u00ff" + good[2][7:], *good[3:]]  # a flipped byte
    assert merkle_root(damaged) != merkle_root(good)
    assert merkle_root(good) == merkle_root(list(good))


def test_verify_works_across_a_key_rotation_and_names_keys_nobody_has() -> None:
    from sealstream.integrity import ChainHead
    from sinks.verify import Entry, VerifyReport, verify

    old = HmacKeyring("k1", {"k1": b"k" * 32})
    new = HmacKeyring("k2", {**old.keys, "k2": b"n" * 32})  # rotated: k1 kept to verify
    before = signed_chain(4, "c", old, routes=("both",))
    last = before[-1]
    after = signed_chain(
        4, "c", new, routes=("both",), head=ChainHead(int(last["seq"]), str(last["hash"]))
    )
    assert {r["key_id"] for r in before} == {"k1"} and {r["key_id"] for r in after} == {"k2"}

    def report(keys: HmacKeyring) -> VerifyReport:
        entries = [
            Entry(r, "cold", "-", (0, i), json.loads(r["payload_json"]))
            for i, r in enumerate(before + after)
        ]
        return verify(None, entries, keys, {}, True, VerifyReport())

    assert report(new).ok  # old key ids still verify after the rotation
    forgot = report(HmacKeyring("k2", {"k2": b"n" * 32}))  # k1 dropped from the keyring
    assert forgot.by_kind() == {"cold:unknown_key": 4}
    assert sorted(f.seq for f in forgot.findings) == [int(r["seq"]) for r in before]
    # k1's secret replaced: each k1 signature still links into the chain, so to the verifier
    # a signed field changed (it cannot tell a wrong key from edited content)
    wrong = report(HmacKeyring("k2", {"k1": b"x" * 32, "k2": b"n" * 32}))
    assert wrong.by_kind() == {"cold:modified": 4}


def test_drift_ignores_what_was_in_flight_and_still_sees_the_rest() -> None:
    from sinks.verify import Entry, VerifyReport, compare

    records = signed_chain(6, "c", KEYS, routes=("both",), tenants=("acme",))

    def entries(store: str, count: int) -> list[Entry]:
        return [Entry(r, store, "-", (0, i)) for i, r in enumerate(records[:count])]

    # cold got offsets 0-5, hot only 0-3 so far; both sinks had committed up to 4
    report = VerifyReport()
    compare(entries("hot", 4), entries("cold", 6), report, settled={0: 4})
    assert (report.drift, report.in_flight) == ([], 2)
    # without the horizon (offline), the same stores drift
    offline = VerifyReport()
    compare(entries("hot", 4), entries("cold", 6), offline)
    assert [(d["hot"], d["cold"]) for d in offline.drift] == [(4, 6)]
    # a record missing below the horizon is drift, whatever is in flight
    missing = VerifyReport()
    compare(entries("hot", 3), entries("cold", 6), missing, settled={0: 4})
    assert [(d["hot"], d["cold"]) for d in missing.drift] == [(3, 4)]


# -- consumer errors --------------------------------------------------------------------------


class ErrorMessage(FakeMessage):
    def __init__(self, error: KafkaError) -> None:
        super().__init__(None, -1)
        self._error = error

    def error(self) -> KafkaError:
        return self._error


def runner_of(store: Any) -> SinkRunner:
    """A runner around ``store`` whose broker never answers (nothing here reaches it), waiting
    out a store's outage for a few milliseconds."""
    return SinkRunner(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        SinkSettings(backoff_base_s=0.01, backoff_max_s=0.02),
        "g",
        ["events.signed"],
        store,
        Limits(10, 10_000, 1.0),
    )


def test_a_fatal_consumer_error_stops_the_sink_for_a_restart_and_others_do_not() -> None:
    """Seen in the fault suite: a static member fenced after a broker restart left the sink
    alive but consuming nothing; it must stop (exit 69) so the supervisor starts it again."""

    class NoStore:
        name = "none"

        def write(self, batch: Batch) -> list[Any]:
            raise AssertionError("nothing to write")

        def close(self) -> None: ...

        def after_outage(self, since: float) -> None: ...

    runner = runner_of(NoStore())
    try:
        transient = KafkaError(KafkaError._TRANSPORT, "broker down")
        runner._take([ErrorMessage(transient)])  # type: ignore[list-item]
        assert (runner.exit_code, runner.stop_event.is_set()) == (0, False)
        # as librdkafka delivers it: code _FATAL, not flagged fatal
        fenced = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced")
        runner._take([ErrorMessage(fenced)])  # type: ignore[list-item]
        assert (runner.exit_code, runner.stop_event.is_set()) == (CONSUMER_FATAL, True)
    finally:
        runner.consumer.close()
        runner.producer.flush(0)


class Polled:
    """The consumer a paused runner polls: each poll a rebalance callback logs, as
    confluent-kafka runs them inside ``consume``."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.log.warning("revoked [('events.signed', 5)]")
        return []

    def assignment(self) -> list[Any]:
        return []

    def pause(self, partitions: list[Any]) -> None: ...

    def resume(self, partitions: list[Any]) -> None: ...


def test_lines_logged_while_a_batch_is_written_name_its_partition_and_offsets() -> None:
    class Flaky:
        name = "flaky"
        calls = 0

        def write(self, batch: Batch) -> list[Any]:
            self.calls += 1
            if self.calls == 1:
                raise StoreUnavailable("connection refused")
            return []

        def close(self) -> None: ...

        def after_outage(self, since: float) -> None: ...

    runner = runner_of(Flaky())
    out = io.StringIO()
    handler = logs.handler("json", out, service="sink-test")
    sink_log = logging.getLogger("sealstream.sink")
    sink_log.addHandler(handler)
    batch = batch_of(signed_chain(3, "events.raw/0", KEYS), start=40)
    try:
        runner._parts[(batch.topic, 0)] = _Partition(batch)
        real, runner.consumer = runner.consumer, Polled(sink_log)  # type: ignore[assignment]
        assert runner._write(batch)
        sink_log.warning("after the batch")
    finally:
        sink_log.removeHandler(handler)
        real.close()
        runner.producer.flush(0)
    found = {
        line["message"].split(" (")[0]: line
        for line in map(json.loads, out.getvalue().splitlines())
    }
    during, after = found["store flaky unavailable"], found["after the batch"]
    assert (during["topic"], during["partition"], during["offsets"]) == (
        "events.signed",
        0,
        "40..42",
    )
    assert "offsets" not in after and "partition" not in after  # nothing left bound
    # polled while the store was out, a rebalance of another partition is not the batch's
    assert "offsets" not in found["revoked [('events.signed', 5)]"]


def test_merges_stop_while_the_embedded_store_fails_and_resume_after_the_check() -> None:
    """A merge that runs while nothing can be written may commit a broken part (the fault
    suite saw a rollup's and audit_decisions'): the first refused insert stops merges, the
    check after the outage starts them again, and a broken part there asks for a restart."""
    from sealstream.settings import ClickHouseSettings
    from sinks.clickhouse.sink import ClickHouseStore
    from sinks.runner import RestartToRepair, StoreUnavailable

    class Client:
        def __init__(self) -> None:
            self.commands: list[str] = []
            self.failing = True
            self.broken: list[tuple[str, str, str]] = []

        def query(self, sql: str, parameters: Any = None) -> Any:
            rows: list[Any] = []
            if sql.startswith("SELECT table, name FROM system.parts"):
                rows = [("events_minutely_state", "202611_1_5_1")]
            elif sql.startswith("CHECK TABLE"):
                rows = self.broken or [("202611_1_5_1", "1", "")]
            return type("Result", (), {"result_rows": rows})()

        def insert(self, *args: Any, **kwargs: Any) -> None:
            if self.failing:
                raise OSError(27, "File too large")

        def command(self, sql: str) -> None:
            self.commands.append(sql)

    client = Client()
    _, decoder = codec()
    store = ClickHouseStore(
        client,  # type: ignore[arg-type]
        ClickHouseSettings(),
        SinkSettings(),
        decoder,
        "g",
        {},
    )
    batch = batch_of(signed_chain(2, "c", KEYS))
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            store.write(batch)
    assert client.commands == ["SYSTEM STOP MERGES"]  # once, at the first refusal
    client.failing = False
    store.write(batch)
    store.after_outage(0.0)
    assert client.commands == ["SYSTEM STOP MERGES", "SYSTEM START MERGES"]
    client.broken = [("202611_1_5_1", "0", "Empty marks file")]
    with pytest.raises(RestartToRepair, match="events_minutely_state 202611_1_5_1"):
        store.after_outage(0.0)
