"""Sink benchmark: rows/s of the ClickHouse sink, records/s of the object sink (both from a
real broker, exactly-once batches, embedded chDB and a local directory), and event_id lookup
latency p50/p99 in the hot store at 1M and 10M rows.

    python -m benchmarks.sinks [--events 100000] [--sizes 1000000,10000000] [--runs 3]

Writes benchmarks/results/sinks.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from benchmarks.common import (
    RESULTS,
    STACK_PORT,
    bench_stack,
    console,
    describe,
    kafka_config,
    machine,
    median_of,
    save,
    task,
)
from ops.stack.local import LocalStack
from schemas.catalog import Catalog, subject_for
from schemas.samples import signed_chain
from schemas.serde import Encoder
from sealstream.keys import HmacKeyring
from sealstream.settings import (
    ClickHouseSettings,
    ObjectStoreSettings,
    RegistrySettings,
    SinkSettings,
)
from sinks.clickhouse.client import connect
from sinks.clickhouse.lookup import find_event
from sinks.clickhouse.migrations import migrate
from sinks.clickhouse.trail_index import TrailIndex
from sinks.runner import SinkRunner
from sinks.service import clickhouse_runner, object_runner

PARTITIONS = 3
WORK = RESULTS / "tmp" / "sinks"


def produce_signed(stack: Any, topic: str, count: int) -> None:
    schema = Catalog().signed_schema()
    with SchemaRegistryClient(stack.settings.registry_settings().client_config()) as client:
        schema_id = client.register_schema(
            subject_for("events.signed", schema), Schema(json.dumps(schema), "AVRO")
        )
    encoder = Encoder(schema_id, schema)
    keys = HmacKeyring("k1", {"k1": b"b" * 32})
    producer = Producer(kafka_config(stack, linger_ms=20, compression_type="lz4"))
    per = count // PARTITIONS
    with task("producing signed events", total=per * PARTITIONS) as bar:
        for partition in range(PARTITIONS):
            for start in range(0, per, 5000):
                records = signed_chain(
                    min(5000, per - start), f"events.raw/{partition}", keys,
                    tenants=("acme", "globex", "initech"), event_types=("payment", "page_view"),
                )  # fmt: skip
                for record in records:
                    while True:
                        try:
                            producer.produce(topic, encoder.encode(record), partition=partition)
                            break
                        except BufferError:
                            producer.poll(0.05)
                bar.advance(len(records))
    producer.flush(60)


def committed_total(stack: LocalStack, group: str, topic: str) -> tuple[int, int]:
    consumer = Consumer(kafka_config(stack, group_id=group))
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
        end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return done, end
    finally:
        consumer.close()


def drain(runner: SinkRunner, stack: LocalStack, group: str, topic: str, label: str) -> float:
    """Run ``runner`` until its group committed every offset of ``topic``; records/s."""
    thread = threading.Thread(target=runner.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    with task(label) as bar:
        while True:
            done, end = committed_total(stack, group, topic)
            bar.update(completed=done, total=end)
            if end and done >= end:
                break
            time.sleep(0.2)
    elapsed = time.perf_counter() - started
    runner.stop_event.set()
    thread.join(60)
    return end / elapsed


# -- lookup latency ---------------------------------------------------------------------------

FILL_SQL = """
INSERT INTO {db}.events (event_id, tenant, event_type, occurred_at, received_at, signed_at,
    producer, correlation_id, request_id, classification, route, payload, masked_fields,
    payload_sha256, content_sha256, hot_content_sha256, enrichment, schema_id, source_topic,
    source_partition, source_offset, chain_id, seq, prev_hash, hash, key_id, signature,
    kafka_topic, kafka_partition, kafka_offset, bytes)
SELECT lower(hex(MD5(toString(number)))) AS event_id,
       concat('tenant-', toString(number % 20)),
       ['payment', 'page_view', 'login', 'order', 'refund'][number % 5 + 1],
       toDateTime64(now64(3) - toIntervalSecond(number % 864000), 3, 'UTC') AS t,
       t, t, 'bench', toString(number), toString(number), 'internal', 'both',
       concat('{{"n":', toString(number), ',"email":"pii:email:', hex(number), '"}}'),
       ['email'], hex(SHA256(toString(number))), hex(SHA256(toString(number))),
       hex(SHA256(toString(number + 1))), map('region', 'eu'), 1, 'events.raw',
       number % 6, number, concat('events.raw/', toString(number % 6)), number,
       hex(SHA256(toString(number - 1))), hex(SHA256(toString(number))), 'k1',
       hex(SHA256(concat('s', toString(number)))), 'events.signed', number % 6, number, 400
FROM numbers({start}, {count})
"""


def fill(client: Any, db: str, start: int, count: int) -> None:
    chunk = 1_000_000
    with task(f"filling events to {start + count:,} rows", total=count) as bar:
        for offset in range(0, count, chunk):
            n = min(chunk, count - offset)
            client.command(FILL_SQL.format(db=db, start=start + offset, count=n))
            bar.advance(n)


def time_lookups(
    lookup: Callable[[str], dict[str, Any] | None], rows: int, samples: int, seed: int
) -> dict[str, float]:
    """p50/p99/max in ms of ``lookup`` over random ids of rows filled by :func:`fill`
    (after a warm-up); every lookup must find its event."""
    rng = random.Random(seed)
    ids = [hashlib.md5(str(rng.randrange(rows)).encode()).hexdigest() for _ in range(samples)]
    for event_id in ids[:50]:
        lookup(event_id)
    timings = []
    for event_id in ids:
        started = time.perf_counter()
        found = lookup(event_id)
        timings.append((time.perf_counter() - started) * 1000)
        assert found is not None and found["event_id"] == event_id
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 3),
        "p99_ms": round(timings[max(0, int(len(timings) * 0.99) - 1)], 3),
        "max_ms": round(timings[-1], 3),
    }


def lookup_latency(
    client: Any, db: str, rows: int, samples: int, state: str, seed: int = 7
) -> dict[str, Any]:
    figures = time_lookups(lambda event_id: find_event(client, db, event_id), rows, samples, seed)
    parts = client.query(
        "SELECT count() FROM system.parts WHERE database = {d:String} AND active "
        "AND table = 'events_by_id'",
        parameters={"d": db},
    ).result_rows[0][0]
    return {"rows": rows, "state": state, "samples": samples, **figures, "active_parts": int(parts)}


def throughput(stack: LocalStack, events: int, runs: int) -> list[dict[str, Any]]:
    """``events`` signed events produced once; each run drains them with fresh consumer groups
    into a fresh ClickHouse database and a fresh object directory."""
    tag = uuid.uuid4().hex[:6]
    topic = f"bench-signed-{tag}"
    names = [topic, *(f"bench-{k}-{tag}" for k in ("decisions", "dlq", "checkpoints", "sinkdlq"))]
    admin = AdminClient(kafka_config(stack))
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in names]).values():
        future.result(30)
    kafka = stack.settings.kafka_settings("admin")
    registry = RegistrySettings(url=stack.registry_url)
    produce_signed(stack, topic, events)
    per_run = []
    for i in range(runs):
        sink = SinkSettings(
            signed_topic=topic,
            decisions_topic=names[1],
            dlq_topic=names[2],
            checkpoints_topic=names[3],
            dead_letter_topic=names[4],
            clickhouse_group=f"bench-ch-{tag}-{i}",
            objects_group=f"bench-obj-{tag}-{i}",
            objects_max_records=10_000,  # rotate by size, so the figure is throughput, not age
            objects_max_age_s=1.0,
        )
        clickhouse = ClickHouseSettings(
            embedded_dir=WORK / "clickhouse", database=f"bench_sink_{tag}_{i}"
        )
        # as `sealstream sink clickhouse` runs embedded: with the audit trail's index
        index = TrailIndex(WORK / f"audit-index-{i}.sqlite3")
        runner, _ = clickhouse_runner(kafka, registry, clickhouse, sink, index)
        ch_rate = drain(runner, stack, sink.clickhouse_group, topic, "clickhouse sink")
        index.close()
        objects = ObjectStoreSettings(url=str(WORK / f"objects-{i}"))
        runner = object_runner(kafka, registry, objects, sink)
        obj_rate = drain(runner, stack, sink.objects_group, topic, "object sink")
        console.log(f"sinks run {i + 1}: {ch_rate:,.0f} rows/s, {obj_rate:,.0f} records/s")
        per_run.append(
            {
                "clickhouse_sink_rows_per_s": round(ch_rate, 1),
                "object_sink_records_per_s": round(obj_rate, 1),
            }
        )
    return per_run


def lookups(sizes: list[int], samples: int, runs: int) -> list[dict[str, Any]]:
    """find_event latency at each size, just loaded and merged; medians of ``runs`` samplings
    (each over other random ids)."""
    settings = ClickHouseSettings(embedded_dir=WORK / "clickhouse", database="bench_lookup")
    client = connect(settings)
    migrate(client, settings)
    db = settings.database
    found = []
    filled = 0
    for size in sizes:
        fill(client, db, filled, size - filled)
        filled = size
        for state in ("just loaded", "merged"):
            if state == "merged":
                with task(f"merging events_by_id at {size:,} rows (OPTIMIZE FINAL)"):
                    client.command(f"OPTIMIZE TABLE {db}.events_by_id FINAL")
            figures = median_of(
                [lookup_latency(client, db, size, samples, state, seed) for seed in range(runs)]
            )
            console.log(f"lookup at {size:,} rows, {state}: p50 {figures['p50_ms']} ms")
            found.append(figures)
    return found


def run(
    stack: LocalStack | None = None,
    *,
    events: int = 100_000,
    sizes: Sequence[int] = (1_000_000, 10_000_000),
    samples: int = 2000,
    runs: int = 3,
) -> dict[str, Any]:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    own = stack is None
    stack = stack or bench_stack("sinks", STACK_PORT)
    try:
        per_run = throughput(stack, events, runs)
    finally:
        if own:
            stack.down()
    found = lookups(list(sizes), samples, runs)
    shutil.rmtree(WORK, ignore_errors=True)
    return {
        "benchmark": "sinks",
        "machine": machine(),
        "events": events,
        "n_runs": runs,
        **median_of(per_run),
        "lookups": found,
        "note": "sinks run in-process against a local Kafka broker on the same 2-core machine; "
        "ClickHouse is the embedded engine (chDB) through clickhouse-connect; lookups are "
        "sinks.clickhouse.lookup.find_event (events_by_id, ordered by event_id) on one client; "
        "the object sink rotates files every 10,000 records (or 1 s) per partition; each "
        "figure is the median of the runs (background merges go on between the 'just loaded' "
        "runs)",
    }


def write(result: dict[str, Any], out: Path = RESULTS) -> None:
    lines = [
        "# Sink benchmark",
        "",
        f"Machine: {describe(result['machine'])}. {result['events']:,} signed events, "
        f"{PARTITIONS} partitions, {result['n_runs']} run(s).",
        "",
        "| sink | throughput |",
        "|---|---:|",
        "| ClickHouse (embedded chDB, exactly-once batches) | "
        f"{result['clickhouse_sink_rows_per_s']:,.0f} rows/s |",
        "| object store (local directory, Avro deflate + manifests) | "
        f"{result['object_sink_records_per_s']:,.0f} records/s |",
        "",
        "| event_id lookup | rows | events_by_id | p50 ms | p99 ms | max ms | parts |",
        "|---|---:|---|---:|---:|---:|---:|",
        *[
            f"| find_event | {r['rows']:,} | {r['state']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['max_ms']} | {r['active_parts']} |"
            for r in result["lookups"]
        ],
        "",
        result["note"] + ".",
        "",
    ]
    save(out, "sinks", result, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = run(
        events=args.events,
        sizes=[int(s) for s in args.sizes.split(",")],
        samples=args.samples,
        runs=args.runs,
    )
    write(result)
    console.print((RESULTS / "sinks.md").read_text())


if __name__ == "__main__":
    main()
