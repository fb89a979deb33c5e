"""Operator tools against the real stack: verify (clean, and four kinds of tampering)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealstream.keys import HmacKeyring, save_hmac_keyring
from sealstream.settings import KeySettings
from sinks.objects.files import read_file
from tests.integration.sinkkit import Sinks, rewrite_cold_file

pytestmark = pytest.mark.integration


@pytest.fixture
def sinks(stack: Any, tmp_path: Path) -> Iterator[Sinks]:
    helper = Sinks(stack, tmp_path)
    # the keyring the sample chains are signed with (tests/integration/sinkkit.py)
    helper.keys_dir.mkdir(parents=True, exist_ok=True)
    save_hmac_keyring(KeySettings(dir=helper.keys_dir), HmacKeyring("k1", {"k1": b"s" * 32}))
    try:
        yield helper
    finally:
        helper.stop_all()


def verify(sinks: Sinks, *args: str) -> tuple[int, dict[str, Any]]:
    result = sinks.cli("verify", *args, "--json")
    assert result.returncode in (0, 1) and result.stdout, result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def findings(report: dict[str, Any], store: str, kind: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["store"] == store and f["kind"] == kind]


def test_verify_is_clean_then_names_each_kind_of_tampering_where_it_happened(
    sinks: Sinks,
) -> None:
    chains = sinks.produce_signed(40, routes=("both", "both", "cold"))
    sinks.start("clickhouse")
    sinks.start("objects")
    sinks.wait_caught_up("clickhouse")
    sinks.wait_caught_up("objects")

    code, report = verify(sinks)  # the hot store through the running sink's endpoint
    assert (code, report["ok"], report["findings"], report["drift"]) == (0, True, [], [])
    # the run is itself an event, for the processors to sign and chain
    actions = sinks.operator_actions()
    assert [(a["action"], a["ok"]) for a in actions] == [("verify", True)]
    assert json.loads(actions[0]["detail_json"])["checked"]["cold"] > 0
    records = [r for c in chains.values() for r in c]
    hot_total = sum(1 for r in records if r["route"] == "both")
    assert report["checked"] == {"hot": hot_total, "cold": len(records)}

    assert sinks.stop("clickhouse") == 0 and sinks.stop("objects") == 0
    root = sinks.tmp / "objects"
    files = {p: read_file(p.read_bytes()) for p in sorted(root.rglob("*.avro"))}
    by_partition: dict[int, list[Path]] = {}
    for path in files:
        by_partition.setdefault(int(path.name.split("+")[1]), []).append(path)
    # 1. one byte flipped in a file of partition 0
    flipped = by_partition[0][0]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    # 2. one record deleted from a file of partition 1 (manifest fixed up)
    deleted_file = by_partition[1][0]
    records_1 = files[deleted_file][0]
    k = next(i for i, r in enumerate(records_1) if r["route"] == "both")  # hot keeps its copy
    deleted = records_1[k]
    rewrite_cold_file(
        root,
        str(deleted_file.relative_to(root)),
        lambda r, o: (r[:k] + r[k + 1 :], o[:k] + o[k + 1 :]),
    )
    # 3. two records swapped in a file of partition 2 (offsets left in place)
    swapped_file = by_partition[2][0]
    first, second = files[swapped_file][0][0], files[swapped_file][0][1]
    rewrite_cold_file(
        root, str(swapped_file.relative_to(root)), lambda r, o: ([r[1], r[0], *r[2:]], o)
    )
    # 4. one ClickHouse row edited
    edited = next(r for r in chains[2][5:] if r["route"] == "both")
    sinks.raw_sql(
        "ALTER TABLE sealstream.events UPDATE payload = '{\"n\":-1}' "
        f"WHERE event_id = '{edited['event_id']}' SETTINGS mutations_sync = 2"
    )

    code, report = verify(sinks)  # the engine directly (the sink is stopped)
    assert code == 1 and not report["ok"]
    modified_cold = findings(report, "cold", "modified")
    assert any(f["location"] == str(flipped.relative_to(root)) for f in modified_cold)
    # a "both" record lost from cold is cold's hole; a cold-only record is in neither store
    missing = findings(report, "cold", "missing") + findings(report, "hot+cold", "missing")
    assert any(
        f["chain_id"] == deleted["chain_id"] and f["seq"] == deleted["seq"] for f in missing
    ), missing
    reordered = findings(report, "cold", "reordered")
    assert {first["chain_id"]} == {f["chain_id"] for f in reordered}
    assert {f["seq"] for f in reordered} & {first["seq"], second["seq"]}
    hot = findings(report, "hot", "modified")
    assert [(f["event_id"], f["seq"]) for f in hot] == [(edited["event_id"], edited["seq"])]
    assert hot[0]["location"].startswith("hot:events ")
    # the hot store itself is intact: no hole of its own, nothing out of order
    assert not findings(report, "hot", "missing") and not findings(report, "hot", "reordered")
    # cold lost a record hot still has: the day's counts and Merkle roots differ
    assert any(d["tenant"] == deleted["tenant"] and d["hot"] > d["cold"] for d in report["drift"])


def test_replay_cold_rebuilds_dropped_hot_tables_to_the_same_rows(sinks: Sinks) -> None:
    chains = sinks.produce_signed(30, routes=("both", "both", "cold"))
    sinks.start("clickhouse", SEALSTREAM_CLICKHOUSE_QUERY_PORT="0")
    sinks.start("objects")
    sinks.wait_caught_up("clickhouse")
    sinks.wait_caught_up("objects")
    assert sinks.stop("clickhouse") == 0 and sinks.stop("objects") == 0
    snapshot = (
        "SELECT tenant, toDate(occurred_at) AS day, count(), groupArraySorted(1000)(hash) "
        "FROM sealstream.events GROUP BY tenant, day ORDER BY tenant, day"
    )
    before = sinks.raw_sql(snapshot)
    hot_routed = sum(1 for c in chains.values() for r in c if r["route"] == "both")
    assert sum(int(r[2]) for r in before) == hot_routed

    sinks.raw_sql("DROP DATABASE sealstream SYNC")
    done = sinks.cli("replay", "cold", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["inserted"], report["already_present"]) == (hot_routed, 0)
    assert report["cold_only_skipped"] == sum(len(c) for c in chains.values()) - hot_routed
    assert sinks.raw_sql(snapshot) == before  # the same rows, hash for hash

    again = json.loads(sinks.cli("replay", "cold", "--json").stdout)
    assert (again["inserted"], again["already_present"]) == (0, hot_routed)
    assert sinks.raw_sql(snapshot) == before
    code, verified = verify(sinks)
    assert code == 0, verified["findings"][:5]


def test_audit_trail_of_one_event_from_receipt_to_cold_file(sinks: Sinks) -> None:
    import httpx
    from confluent_kafka import Producer

    from schemas.audit import AuditLog

    chains = sinks.produce_signed(10)
    event = chains[1][4]
    producer = Producer(sinks.stack.kafka_settings().client_config())
    receipt = {"event_id": event["event_id"], "tenant": event["tenant"], "receipt_id": "r-1"}
    producer.produce(sinks.topics["receipts"], json.dumps(receipt).encode(), b"k")
    assert producer.flush(10) == 0
    log = AuditLog(
        sinks.stack.kafka_settings(), sinks.stack.registry_settings(), sinks.topics["decisions"]
    )
    log.record(
        subject="svc-payments",
        tenant=event["tenant"],
        action="publish",
        allow=True,
        reason="ALLOW_ROLE",
        detail={},
        request_id=event["request_id"],
        policy_version="v7",
        event_type=event["event_type"],
    )
    log.close()
    sinks.start("clickhouse")
    sinks.start("objects")
    sinks.wait_caught_up("clickhouse")
    sinks.wait_caught_up("objects")

    found = sinks.cli("audit", event["event_id"], "--json")  # through the sink's endpoint
    assert found.returncode == 0, found.stderr
    trail = json.loads(found.stdout)
    assert trail["received"]["receipt"] == receipt
    assert [(d["subject"], d["policy_version"], d["decision"]) for d in trail["authorization"]] == [
        ("svc-payments", "v7", "ALLOW")
    ]
    chain = trail["processing"]["chain"]
    assert (chain["chain_id"], chain["seq"], chain["hash"]) == (
        event["chain_id"],
        event["seq"],
        event["hash"],
    )
    assert trail["processing"]["signature_valid"] is True
    # the hot path (the sink's audit index) tells what ClickHouse itself tells
    store = json.loads(sinks.cli("audit", event["event_id"], "--json", "--from-store").stdout)
    assert (trail.pop("read_from"), store.pop("read_from")) == ("audit_index", "clickhouse")
    trail["stored"]["hot"].pop("stored_at"), store["stored"]["hot"].pop("stored_at")
    assert trail == store
    cold = trail["stored"]["cold"]
    assert cold["status"] == "stored" and (sinks.tmp / "objects" / cold["path"]).exists()
    denied = httpx.get(
        f"http://127.0.0.1:{sinks.query_port}/v1/audit/{event['event_id']}",
        headers={"Authorization": f"Bearer {sinks.token('acme', ['analyst'])}"},
    )
    assert denied.status_code == 403
    assert sinks.cli("audit", "no-such-event").returncode == 1
    assert sinks.stop("clickhouse") == 0 and sinks.stop("objects") == 0
    direct = sinks.cli("audit", event["event_id"], "--json")  # the engine itself
    assert direct.returncode == 0 and json.loads(direct.stdout)["processing"]["chain"] == chain
    lookups = sinks.raw_sql(
        "SELECT decision, count() FROM sealstream.audit_decisions "
        "WHERE action = 'audit_lookup' GROUP BY decision ORDER BY decision"
    )
    assert [(str(d), int(n)) for d, n in lookups] == [("ALLOW", 3), ("DENY", 1)]


def test_dlq_stats_list_and_show_select_and_decode_dead_letters(sinks: Sinks) -> None:
    import base64

    from confluent_kafka import Producer

    from schemas.samples import signed_chain

    topic = sinks.topics["dlq"]
    sinks.produce_dead_letters(5)  # undecodable, reason unknown_schema, tenant acme
    record = signed_chain(1, "c", HmacKeyring("k1", {"k1": b"s" * 32}))[0]
    producer = Producer(sinks.stack.kafka_settings().client_config())
    producer.produce(
        topic,
        sinks.signed_encoder().encode(record),
        partition=2,
        headers=[
            ("dlq.reason", b"enrichment_timeout"),
            ("dlq.stage", b"enrich"),
            ("tenant", b"globex"),
            ("event_type", b"payment"),
        ],
    )
    assert producer.flush(10) == 0

    stats = json.loads(sinks.cli("dlq", "stats", "--topic", topic, "--json").stdout)
    assert stats["total"] == 6
    assert stats["reason"] == {"unknown_schema": 5, "enrichment_timeout": 1}
    assert stats["tenant"] == {"acme": 5, "globex": 1} and stats["age"] == {"<1h": 6}
    listed = json.loads(
        sinks.cli("dlq", "list", "--topic", topic, "--tenant", "globex", "--json").stdout
    )
    assert [(r["partition"], r["reason"], r["stage"]) for r in listed] == [
        (2, "enrichment_timeout", "enrich")
    ]
    shown = json.loads(
        sinks.cli("dlq", "show", f"2:{listed[0]['offset']}", "--topic", topic, "--json").stdout
    )
    assert shown["decoded"]["record"]["event_id"] == record["event_id"]
    broken = json.loads(
        sinks.cli("dlq", "list", "--topic", topic, "--reason", "unknown_schema", "--json").stdout
    )
    assert len(broken) == 5
    first = broken[0]
    raw = json.loads(
        sinks.cli(
            "dlq", "show", f"{first['partition']}:{first['offset']}", "--topic", topic, "--json"
        ).stdout
    )
    assert base64.b64decode(raw["value_base64"]) == b"\x07not-wire-format"
    assert "decode_error" in raw and raw["headers"]["dlq.stage"] == "decode"
    assert sinks.cli("dlq", "show", "0:999", "--topic", topic).returncode == 1

    # replay needs the dlq:replay scope, and a token limits it to its tenant
    no_scope = sinks.token("globex", ["operator"])
    refused = sinks.cli("dlq", "replay", "--topic", topic, "--dry-run", "--token", no_scope)
    assert refused.returncode == 2 and "dlq:replay" in refused.stderr
    scoped = sinks.token("globex", ["operator"], ["dlq:replay"])
    dry = sinks.cli("dlq", "replay", "--topic", topic, "--dry-run", "--token", scoped, "--json")
    assert dry.returncode == 0, dry.stderr
    outcomes = {(p["tenant"], p["outcome"]) for p in json.loads(dry.stdout)["letters"]}
    assert outcomes == {("acme", "denied"), ("globex", "fail")}
