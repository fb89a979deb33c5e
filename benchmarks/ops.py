"""Operator-tool benchmark: ``sealstream audit`` latency at 1M stored events (each with its
receipt and authorization decision) from the sink's audit index (the hot path) and from
ClickHouse itself, the index's rebuild time, and ``verify`` throughput in events/s
(signatures, payload hashes and chain walk over signed events, hot and cold copies).

    python -m benchmarks.ops [--audit-events 1000000] [--verify-events 200000] [--runs 3]

Writes benchmarks/results/ops.json and .md. No Kafka needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, console, describe, machine, median_of, save, task
from benchmarks.sinks import fill, time_lookups
from schemas.samples import signed_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.access import direct_reader
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
from sinks.clickhouse.trail_index import TrailIndex
from sinks.service import rebuild_index
from sinks.trail import IndexSource, StoreSource, audit_trail
from sinks.verify import Entry, VerifyReport, verify

WORK = RESULTS / "tmp" / "ops"
WHY_1M = (
    "Why 1M and not 10M events by default: measured on this 2-core machine, 1M events with "
    "their receipts and decisions take about two minutes end to end (fill, merge, then the "
    "audit index rebuild: 64-94 s, a 1.8 GB SQLite file). The rebuild grows linearly with the "
    "rows, so 10M means about 13 minutes of rebuild, ~5 minutes of fill and an 18 GB index: "
    "more than the ten minutes this part may take. The trail read is two SQLite primary-key "
    "lookups, whose cost grows with the B-tree depth (log n), not with n. Measure 10M with "
    "`python -m benchmarks --only ops --audit-events 10000000`."
)
KEYS = HmacKeyring("k1", {"k1": b"b" * 32})


# each filled event's receipt and authorization decision (benchmarks/sinks.py fills events)
RECEIPTS_SQL = """
INSERT INTO {db}.receipts (event_id, tenant, receipt, kafka_topic, kafka_partition,
    kafka_offset)
SELECT lower(hex(MD5(toString(number)))), concat('tenant-', toString(number % 20)),
       concat('{{"event_id":"', lower(hex(MD5(toString(number)))), '","seal":"',
              hex(SHA256(toString(number))), '"}}'), 'receipts', number % 6, number
FROM numbers({start}, {count})
"""
DECISIONS_SQL = """
INSERT INTO {db}.audit_decisions (decided_at, subject, tenant, event_tenant, event_type,
    action, decision, reason_code, policy_version, request_id, correlation_id, kafka_topic,
    kafka_partition, kafka_offset)
SELECT toDateTime64(now64(3) - toIntervalSecond(number % 864000), 3, 'UTC'), 'svc-bench',
       concat('tenant-', toString(number % 20)), concat('tenant-', toString(number % 20)),
       'payment', 'publish', 'ALLOW', 'ALLOW_ROLE', 'v1+abc', toString(number),
       toString(number), 'audit.decisions', number % 6, number
FROM numbers({start}, {count})
"""


def audit_latency(rows: int, samples: int, runs: int = 1) -> dict[str, Any]:
    settings = ClickHouseSettings(embedded_dir=WORK / "clickhouse", database="bench_ops")
    client = connect(settings)
    migrate(client, settings)
    fill(client, settings.database, 0, rows)
    for sql in (RECEIPTS_SQL, DECISIONS_SQL):
        client.command(sql.format(db=settings.database, start=0, count=rows))
    for table in ("events_by_id", "receipts", "audit_decisions"):
        client.command(f"OPTIMIZE TABLE {settings.database}.{table} FINAL")

    index = TrailIndex(WORK / "audit-index.sqlite3")
    started = time.perf_counter()
    counts = rebuild_index(index, client, settings.database)
    rebuild_s = time.perf_counter() - started
    console.log(f"audit index rebuilt in {rebuild_s:.1f} s: {counts}")

    def trail(source: Any) -> Any:
        return lambda event_id: _complete(audit_trail(source(), event_id, KEYS))

    read = direct_reader(client, settings.database)
    indexed, store = [], []
    for seed in range(11, 11 + runs):
        indexed.append(time_lookups(trail(lambda: IndexSource(index)), rows, samples, seed))
        store.append(time_lookups(trail(lambda: StoreSource(read)), rows, samples // 4, seed))
    index.close()
    return {
        "rows": rows,
        "samples": samples,
        **median_of(indexed),
        "index_rebuild_s": round(rebuild_s, 1),
        "index_mb": round((WORK / "audit-index.sqlite3").stat().st_size / 2**20),
        "from_store": {"samples": samples // 4, **median_of(store), "queries_per_trail": 5},
    }


def _complete(trail: dict[str, Any] | None) -> dict[str, Any] | None:
    """Every lookup must find the event's receipt and decision too."""
    assert trail is not None and trail["received"]["receipt"] is not None, trail
    assert trail["authorization"], trail
    return trail


def verify_throughput(count: int) -> dict[str, Any]:
    per_chain = count // 4
    hot: list[Entry] = []
    cold: list[Entry] = []
    for partition in range(4):
        for offset, record in enumerate(signed_chain(per_chain, f"events.raw/{partition}", KEYS)):
            payload, masked = (
                json.loads(record["payload_json"]),
                json.loads(record["hot_payload_json"]),
            )
            cold.append(Entry(record, "cold", "-", (partition, offset), payload, masked))
            hot.append(Entry(record, "hot", "-", (partition, offset), None, masked))
    started = time.perf_counter()
    report = verify(hot, cold, KEYS, {}, True, VerifyReport())
    elapsed = time.perf_counter() - started
    assert report.ok, report.by_kind()
    checked = report.checked["hot"] + report.checked["cold"]
    return {
        "entries": checked,
        "seconds": round(elapsed, 2),
        "entries_per_s": round(checked / elapsed),
    }


def run(
    *, rows: int = 1_000_000, samples: int = 1000, verify_events: int = 200_000, runs: int = 3
) -> dict[str, Any]:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with task("ops: verify throughput", total=runs) as bar:
        verified = []
        for _ in range(runs):
            verified.append(verify_throughput(verify_events))
            bar.advance()
    with task(f"ops: audit trail latency at {rows:,} rows"):
        audited = audit_latency(rows, samples, runs)
    shutil.rmtree(WORK, ignore_errors=True)
    return {
        "benchmark": "ops",
        "machine": machine(),
        "n_runs": runs,
        "audit": audited,
        "verify": median_of(verified),
        "note": "audit = sinks.trail.audit_trail: from the ClickHouse sink's audit index "
        "(sinks/clickhouse/trail_index.py, two SQLite primary-key reads), and from the embedded "
        "engine itself (events_by_id, receipts, audit_decisions, dead_letters, dlq_replays; "
        "merged parts); cold location not looked up (no store); verify = sinks.verify.verify "
        "in one process over hot and cold copies of the same signed events (each entry: HMAC "
        "signature, payload hash, chain link), excluding the time to read the stores; "
        "latencies and verify rates are medians of the runs, the index rebuild is timed once",
    }


def write(result: dict[str, Any], out: Path = RESULTS) -> None:
    audited, verified = result["audit"], result["verify"]
    save(
        out,
        "ops",
        result,
        "# Operator tools benchmark\n\n"
        f"Machine: {describe(result['machine'])}. {result['n_runs']} run(s).\n\n"
        "| measure | figure |\n|---|---:|\n"
        f"| `audit` trail at {audited['rows']:,} events, p50 (audit index) | "
        f"{audited['p50_ms']} ms |\n"
        f"| `audit` trail at {audited['rows']:,} events, p99 (audit index) | "
        f"{audited['p99_ms']} ms |\n"
        f"| `audit --from-store` (ClickHouse, 5 queries), p50 | "
        f"{audited['from_store']['p50_ms']} ms |\n"
        f"| `audit --from-store` (ClickHouse, 5 queries), p99 | "
        f"{audited['from_store']['p99_ms']} ms |\n"
        f"| audit index rebuild from ClickHouse ({audited['rows']:,} events, receipts, "
        f"decisions) | {audited['index_rebuild_s']} s, {audited['index_mb']} MB |\n"
        f"| `verify` entries/s ({verified['entries']:,} entries) | "
        f"{verified['entries_per_s']:,.0f} |\n\n"
        f"{result['note']}.\n\n{WHY_1M}\n",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", "--audit-events", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--verify-events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = run(
        rows=args.rows, samples=args.samples, verify_events=args.verify_events, runs=args.runs
    )
    write(result)
    console.print((RESULTS / "ops.md").read_text())


if __name__ == "__main__":
    main()
