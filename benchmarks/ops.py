"""Operator-tool benchmark: ``sealstream audit`` latency at 1M stored events (the audit trail's
queries on the embedded engine) and ``verify`` throughput in events/s (signatures, payload
hashes and chain walk over signed events, hot and cold copies).

    python -m benchmarks.ops [--rows 1000000] [--verify-events 200000]

Writes benchmarks/results/ops.json and .md. No Kafka needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from typing import Any

from benchmarks.common import RESULTS, console, machine
from benchmarks.sinks import fill, time_lookups
from schemas.samples import signed_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.access import direct_reader
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
from sinks.trail import audit_trail
from sinks.verify import Entry, VerifyReport, verify

WORK = RESULTS / "tmp" / "ops"
KEYS = HmacKeyring("k1", {"k1": b"b" * 32})


def audit_latency(rows: int, samples: int) -> dict[str, Any]:
    settings = ClickHouseSettings(embedded_dir=WORK / "clickhouse", database="bench_ops")
    client = connect(settings)
    migrate(client, settings)
    fill(client, settings.database, 0, rows)
    client.command(f"OPTIMIZE TABLE {settings.database}.events_by_id FINAL")

    read = direct_reader(client, settings.database)

    figures = time_lookups(lambda event_id: audit_trail(read, event_id, KEYS), rows, samples, 11)
    return {"rows": rows, "samples": samples, **figures, "queries_per_trail": 3}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--verify-events", type=int, default=200_000)
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    console.log("verify throughput")
    verified = verify_throughput(args.verify_events)
    console.log(verified)
    console.log(f"audit trail latency at {args.rows:,} rows")
    audited = audit_latency(args.rows, args.samples)
    console.log(audited)
    shutil.rmtree(WORK, ignore_errors=True)
    doc = {
        "benchmark": "ops",
        "machine": machine(),
        "audit": audited,
        "verify": verified,
        "note": "audit = sinks.trail.audit_trail on the embedded engine (events_by_id, "
        "receipts, audit_decisions; merged parts); verify = sinks.verify.verify in one "
        "process over hot and cold copies of the same signed events (each entry: HMAC "
        "signature, payload hash, chain link), excluding the time to read the stores",
    }
    (RESULTS / "ops.json").write_text(json.dumps(doc, indent=2) + "\n")
    m = doc["machine"]
    (RESULTS / "ops.md").write_text(
        "# Operator tools benchmark\n\n"
        f"Machine: {m['cpu_count']} CPUs, {m['memory_gib']} GiB, {m['platform']}, "
        f"Python {m['python']}.\n\n"
        "| measure | figure |\n|---|---:|\n"
        f"| `audit` trail at {audited['rows']:,} events, p50 | {audited['p50_ms']} ms |\n"
        f"| `audit` trail at {audited['rows']:,} events, p99 | {audited['p99_ms']} ms |\n"
        f"| `verify` entries/s ({verified['entries']:,} entries) | "
        f"{verified['entries_per_s']:,} |\n\n"
        f"{doc['note']}.\n"
    )
    console.print(doc)


if __name__ == "__main__":
    main()
