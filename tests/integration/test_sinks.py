"""Sinks against the real stack: signed events -> embedded ClickHouse and cold files, exactly once
through crashes, and through a storage outage."""

from __future__ import annotations

import hashlib
import json
import re
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sinks.objects.files import MANIFEST_SUFFIX, parse_path, read_records
from tests.integration.sinkkit import Sinks

pytestmark = pytest.mark.integration


@pytest.fixture
def sinks(stack: Any, tmp_path: Path) -> Iterator[Sinks]:
    helper = Sinks(stack, tmp_path)
    try:
        yield helper
    finally:
        helper.stop_all()


def cold_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.avro"))}


def check_cold(root: Path, expected: list[dict[str, Any]]) -> None:
    """Every expected record exactly once in the files; manifests true to their files."""
    seen: list[str] = []
    for relative, data in cold_files(root).items():
        manifest = json.loads((root / (relative + MANIFEST_SUFFIX)).read_text())
        assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
        records = read_records(data)
        assert manifest["records"] == len(records)
        fields = parse_path(relative)
        assert fields is not None
        assert {r["tenant"] for r in records} == {fields["tenant"]}
        assert {r["event_type"] for r in records} == {fields["event_type"]}
        for chain_id, chain in manifest["chains"].items():
            mine = [r for r in records if r["chain_id"] == chain_id]
            assert (mine[0]["hash"], mine[-1]["hash"]) == (chain["first_hash"], chain["last_hash"])
        seen.extend(r["event_id"] for r in records)
    assert len(seen) == len(set(seen)), "an event is stored twice in cold storage"
    assert sorted(seen) == sorted(r["event_id"] for r in expected)


def hot_counts(sinks: Sinks) -> tuple[int, int]:
    """(rows, distinct event ids) in the raw events table, duplicates included."""
    rows = sinks.raw_sql("SELECT count(), uniqExact(event_id) FROM sealstream.events")
    return int(rows[0][0]), int(rows[0][1])


def test_signed_events_land_hot_and_cold_with_counts_equal_to_the_source(
    sinks: Sinks,
) -> None:
    routes = ("both", "both", "hot", "cold")
    chains = sinks.produce_signed(100, routes=routes, poison=3)
    sinks.produce_dead_letters(7)
    everything = [r for records in chains.values() for r in records]
    hot = [r for r in everything if r["route"] in ("hot", "both")]
    cold = [r for r in everything if r["route"] in ("cold", "both")]

    sinks.start("clickhouse")
    sinks.start("objects")
    sinks.wait_caught_up("clickhouse")
    sinks.wait_caught_up("objects")

    analyst = sinks.token("acme", ["analyst"])
    answer = sinks.query(
        "SELECT tenant, count() AS n FROM events GROUP BY tenant ORDER BY tenant", analyst
    )
    assert answer.status_code == 200, answer.text
    acme_hot = sum(1 for r in hot if r["tenant"] == "acme")
    assert answer.json()["rows"] == [["acme", acme_hot]]  # the other tenant is invisible
    masked = sinks.query("SELECT payload FROM events LIMIT 1", analyst).json()["rows"][0][0]
    assert "pii:email:" in masked and "@example.test" not in masked  # hot copy is masked
    refused = sinks.query("INSERT INTO events (event_id) VALUES ('x')", analyst)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "query_not_read_only"
    assert sinks.query("SELECT 1", sinks.token("acme", ["publisher"])).status_code == 403
    csv = sinks.query("SELECT count() AS n FROM dead_letters", analyst, fmt="csv")
    assert csv.text.splitlines() == ["n", "7"]
    rollup = sinks.query("SELECT sum(events) FROM events_minutely", analyst).json()["rows"]
    assert rollup == [[acme_hot]]
    auditor = sinks.token("acme", ["auditor"])  # every tenant, and the lookup table
    one = hot[-1]
    found = sinks.query(
        f"SELECT row FROM events_by_id WHERE event_id = '{one['event_id']}'", auditor
    ).json()["rows"]
    stored = json.loads(found[0][0])
    assert (stored["tenant"], stored["signature"], int(stored["seq"])) == (
        one["tenant"], one["signature"], one["seq"],
    )  # fmt: skip
    assert sinks.query("SELECT count() FROM events_by_id", analyst).status_code == 400
    cli = sinks.cli("query", "SELECT count() AS n FROM events", "--tenant", "globex", "-f", "json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["rows"] == [[len(hot) - acme_hot]]
    cli = sinks.cli("query", "DELETE FROM events WHERE 1", "--tenant", "globex")
    assert cli.returncode == 1 and "query_not_read_only" in cli.stderr
    sinks.wait_caught_up("clickhouse")  # audit records are in Kafka before each answer
    assert sinks.stop("clickhouse") == 0
    assert sinks.stop("objects") == 0

    assert hot_counts(sinks) == (len(hot), len(hot))
    assert sorted(r[0] for r in sinks.raw_sql("SELECT event_id FROM sealstream.events")) == sorted(
        r["event_id"] for r in hot
    )
    audits = sinks.raw_sql(
        "SELECT reason_code, count() FROM sealstream.audit_decisions WHERE action = 'query' "
        "GROUP BY reason_code ORDER BY reason_code"
    )
    assert dict((str(k), int(v)) for k, v in audits) == {
        "DENY_ROLE": 1, "QUERY_OK": 6, "QUERY_REJECTED": 3,
    }  # fmt: skip
    check_cold(sinks.tmp / "objects", cold)
    # the three undecodable records went to the sinks' dead-letter topic (once per sink)
    sink_dlq = sinks.committed("nobody", [sinks.topics["sink_dlq"]])[1]
    assert sink_dlq == 2 * 3


def test_objects_sink_writes_to_an_s3_api_endpoint(sinks: Sinks, s3: Any) -> None:
    chains = sinks.produce_signed(50)
    expected = sorted(r["event_id"] for records in chains.values() for r in records)
    sinks.start(
        "objects",
        SEALSTREAM_OBJECTS_URL=f"s3://{s3.bucket}/sealstream",
        SEALSTREAM_OBJECTS_ENDPOINT=s3.endpoint,
        SEALSTREAM_OBJECTS_ACCESS_KEY_ID="test",
        SEALSTREAM_OBJECTS_SECRET_ACCESS_KEY="test",
        SEALSTREAM_OBJECTS_ALLOW_HTTP="true",
        SEALSTREAM_OBJECTS_CODEC="null",
    )
    sinks.wait_caught_up("objects")
    seen: list[str] = []
    keys = s3.keys("sealstream/")
    data_keys = [k for k in keys if k.endswith(".avro")]
    assert data_keys and all(k + MANIFEST_SUFFIX in keys for k in data_keys)
    for key in data_keys:
        data = s3.get(key)
        manifest = json.loads(s3.get(key + MANIFEST_SUFFIX))
        assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
        seen.extend(r["event_id"] for r in read_records(data))
    assert sorted(seen) == expected


@pytest.mark.parametrize("deduplicate", [True, False], ids=["dedup", "negative-control"])
def test_clickhouse_sink_killed_between_insert_and_commit(sinks: Sinks, deduplicate: bool) -> None:
    chains = sinks.produce_signed(200)
    expected = sum(len(r) for r in chains.values())
    sinks.start(
        "clickhouse",
        SEALSTREAM_SINK_FAULT_CRASH_POINT="after_write",
        SEALSTREAM_SINK_FAULT_CRASH_AFTER="2",
        SEALSTREAM_SINK_DEDUPLICATE=str(deduplicate).lower(),
        SEALSTREAM_CLICKHOUSE_QUERY_PORT="0",
    )
    assert sinks.wait_exit("clickhouse") == -9
    group = sinks.env["SEALSTREAM_SINK_CLICKHOUSE_GROUP"]
    pending = sinks.committed(group, [sinks.topics["signed"]])[2]
    assert any(m.startswith("sealstream:pending:") for m in pending), pending
    sinks.start(
        "clickhouse",
        SEALSTREAM_SINK_DEDUPLICATE=str(deduplicate).lower(),
        SEALSTREAM_CLICKHOUSE_QUERY_PORT="0",
    )
    sinks.wait_caught_up("clickhouse")
    assert "rebuilding pending batch" in sinks.log_text("clickhouse")
    assert sinks.stop("clickhouse") == 0
    rows, distinct = hot_counts(sinks)
    rollup = int(sinks.raw_sql("SELECT sum(events) FROM sealstream.events_minutely")[0][0])
    assert distinct == expected  # nothing lost either way
    if deduplicate:
        assert (rows - expected, rollup - expected) == (0, 0)
    else:  # the oracle can fail: without the token the rebuilt batch is stored again
        assert rollup > expected


def test_objects_sink_killed_between_upload_and_commit_rewrites_identical_files(
    sinks: Sinks,
) -> None:
    chains = sinks.produce_signed(150)
    expected = [r for records in chains.values() for r in records]
    sinks.start(
        "objects",
        SEALSTREAM_SINK_FAULT_CRASH_POINT="after_write",
        SEALSTREAM_SINK_FAULT_CRASH_AFTER="1",
    )
    assert sinks.wait_exit("objects") == -9
    root = sinks.tmp / "objects"
    before = cold_files(root)
    mtimes = {p: (root / p).stat().st_mtime_ns for p in before}
    assert before, "the crashed sink uploaded nothing before it died"
    sinks.start("objects")
    sinks.wait_caught_up("objects")
    assert "rebuilding pending batch" in sinks.log_text("objects")
    assert sinks.stop("objects") == 0
    after = cold_files(root)
    rewritten = [p for p in before if (root / p).stat().st_mtime_ns != mtimes[p]]
    assert rewritten, "no file of the pending batch was uploaded again"
    assert all(after[p] == before[p] for p in before)  # byte-identical re-uploads
    check_cold(root, expected)


def test_clickhouse_unavailable_pauses_then_catches_up_without_loss(sinks: Sinks) -> None:
    first = sinks.produce_signed(30)
    proc = sinks.start("clickhouse")
    sinks.wait_caught_up("clickhouse")
    # The storage path fails for real: no file may grow (RLIMIT_FSIZE = 0), so ClickHouse
    # cannot write parts nor the client its insert file.
    soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        second = sinks.produce_signed(40)
        # The sink cannot write its own log now either; its metrics say what happens.
        deadline = time.monotonic() + 60
        while (refused := sinks.metric("sealstream_sink_store_unavailable_total")) < 3:
            assert time.monotonic() < deadline, refused
            time.sleep(0.3)
        assert sinks.metric("sealstream_sink_paused") == 1
        group = sinks.env["SEALSTREAM_SINK_CLICKHOUSE_GROUP"]
        done, ends, _ = sinks.committed(group, [sinks.topics["signed"]])
        assert done < ends  # nothing committed past what the store took
    finally:
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
    sinks.wait_caught_up("clickhouse")
    assert sinks.metric("sealstream_sink_paused") == 0  # resumed
    assert sinks.stop("clickhouse") == 0
    expected = sum(len(r) for r in first.values()) + sum(len(r) for r in second.values())
    assert hot_counts(sinks) == (expected, expected)


def test_a_part_broken_during_an_outage_is_set_aside_by_a_restart(sinks: Sinks) -> None:
    """What one fault-suite run saw: while the sink could not write, the embedded engine
    committed a rollup part with an empty marks file, and every rollup query failed from then
    on. Here the newest rollup part is broken that way, then the store fails for real. Once
    writes succeed again the sink checks the parts written around the outage, finds it, and
    stops with 75; the next start sets the part aside (and rebuilds the rollup if the part's
    sources are gone), so the rollup counts every event again."""
    first = sinks.produce_signed(30)
    proc = sinks.start("clickhouse")
    sinks.wait_caught_up("clickhouse")
    state = sinks.tmp / "clickhouse" / "data" / "sealstream" / "events_minutely_state"

    def rank(part: Path) -> tuple[int, int]:  # name: partition_min_max_level
        _, _, high, level = part.name.split("_")
        return int(high), int(level)

    newest = max((p for p in state.iterdir() if re.fullmatch(r"\d+_\d+_\d+_\d+", p.name)), key=rank)
    marks = list(newest.glob("*mrk*"))
    assert marks, sorted(x.name for x in newest.iterdir())
    for path in marks:
        path.write_bytes(b"")
    soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        second = sinks.produce_signed(40)
        deadline = time.monotonic() + 60
        while sinks.metric("sealstream_sink_store_unavailable_total") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    finally:
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert sinks.wait_exit("clickhouse", 120) == 75, sinks.log_text("clickhouse")
    assert newest.name in sinks.log_text("clickhouse")
    sinks.start("clickhouse")
    sinks.wait_caught_up("clickhouse")
    repaired = [
        x for x in sinks.log_text("clickhouse").splitlines() if "broken parts at start" in x
    ]
    print(repaired)
    assert repaired and newest.name in repaired[0]
    assert sinks.stop("clickhouse") == 0
    expected = sum(len(r) for r in first.values()) + sum(len(r) for r in second.values())
    assert hot_counts(sinks) == (expected, expected)
    rollup = sinks.raw_sql("SELECT sum(events) FROM sealstream.events_minutely")
    assert int(rollup[0][0]) == expected


def test_a_sink_fenced_for_good_exits_and_a_restart_carries_on(sinks: Sinks) -> None:
    """What CI saw after a broker restart: the ClickHouse sink's static member was fenced
    (FENCED_INSTANCE_ID, fatal in librdkafka) and the sink stayed up consuming nothing. Here
    another consumer joins with the sink's group.instance.id, which fences it the same way:
    the sink must exit 69, and once started again store every event exactly once."""
    from confluent_kafka import Consumer

    first = sinks.produce_signed(20)
    sinks.start("clickhouse")
    sinks.wait_caught_up("clickhouse")
    group = sinks.env["SEALSTREAM_SINK_CLICKHOUSE_GROUP"]
    impostor = Consumer(
        sinks.stack.kafka_settings().client_config(
            group_id=group,
            group_instance_id=f"clickhouse-{sinks.topics['signed']}",  # as Sinks.start sets it
            enable_auto_commit=False,
            session_timeout_ms=6000,
            partition_assignment_strategy="cooperative-sticky",  # the sink's, or no join
        )
    )
    impostor.subscribe([sinks.topics["signed"]])
    try:
        deadline = time.monotonic() + 30
        while not impostor.assignment():
            assert time.monotonic() < deadline, "the second member never joined"
            impostor.poll(0.5)
        second = sinks.produce_signed(20)  # the fenced sink's next commit fails for good
        assert sinks.wait_exit("clickhouse", 90) == 69, sinks.log_text("clickhouse")
    finally:
        impostor.close()
    assert "failed for good" in sinks.log_text("clickhouse")
    sinks.start("clickhouse")
    sinks.wait_caught_up("clickhouse")
    assert sinks.stop("clickhouse") == 0
    expected = sum(len(r) for r in first.values()) + sum(len(r) for r in second.values())
    assert hot_counts(sinks) == (expected, expected)
