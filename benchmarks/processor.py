"""Stream processor benchmark: events/s of one `sealstream worker` (faust, exactly-once) against
a plain confluent-kafka consume-transform-produce loop doing the same decode/enrich/mask/sign/
encode with the same Processor, on the same broker and the same input.

    python -m benchmarks.processor [--events 20000] [--runs 3] [--frame 16]

Each pipeline reads the input twice: one plain record per event, then frames of ``--frame``
events per record (schemas/frames.py; the gateway writes a request's events of one partition
as one frame: 100 events over 6 partitions are frames of about 17).

Writes benchmarks/results/processor.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
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
    kafka_env,
    machine,
    median_of,
    save,
    task,
)
from ops.stack.local import LocalStack
from schemas.catalog import Catalog, subject_for
from schemas.frames import FramedEvent, decode_frame, encode_frame, is_frame
from schemas.samples import payment_event
from schemas.serde import Encoder
from sealstream.integrity import ChainHead
from sealstream.keys import load_hmac_keyring
from sealstream.settings import (
    KeySettings,
    RegistrySettings,
    WorkerSettings,
)
from streams.app import build_processor
from streams.processor import Source

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 3
FRAME = 16


def produce_raw(stack: LocalStack, topic: str, count: int, frame: int = 1) -> None:
    """``count`` payment events, one per record, or ``frame`` per record (frames)."""
    catalog = Catalog()
    schema = catalog.event_schema("payment")
    with SchemaRegistryClient(stack.settings.registry_settings().client_config()) as client:
        found = client.lookup_schema(
            subject_for("events.raw", schema), Schema(json.dumps(schema), "AVRO")
        )
    encoder = Encoder(int(found.schema_id), schema)
    producer = Producer(kafka_config(stack, linger_ms=20, compression_type="lz4"))
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    pending: list[FramedEvent] = []
    for i in range(count):
        value, key = encoder.encode(payment_event(i, "acme", now)), f"acme:a{i % 50}".encode()
        if frame == 1:
            producer.produce(topic, value=value, key=key)
        else:
            pending.append(FramedEvent(key, {"tenant": b"acme"}, value))
            if len(pending) == frame:
                producer.produce(topic, value=encode_frame(pending), partition=i % PARTITIONS)
                pending = []
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)


def committed(stack: LocalStack, group: str, topic: str) -> int:
    consumer = Consumer(kafka_config(stack, group_id=group))
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10
        )
        return sum(max(0, tp.offset) for tp in offsets)
    finally:
        consumer.close()


def run_worker(
    stack: LocalStack,
    topics: dict[str, str],
    keys: KeySettings,
    count: int,
    work: Path,
    frame: int = 1,
    on_start: Callable[[int], None] | None = None,
) -> float:
    """Events/s of the worker over ``count`` events, ``frame`` per input record;
    ``on_start`` gets the worker's pid once it is running (a profiler)."""
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        **kafka_env(stack),
        "SEALSTREAM_REGISTRY_URL": stack.registry_url,
        "SEALSTREAM_KEYS_DIR": str(keys.dir),
        "SEALSTREAM_WORKER_APP_ID": app_id,
        "SEALSTREAM_WORKER_PARTITIONS": str(PARTITIONS),
        "SEALSTREAM_WORKER_RAW_TOPIC": topics["raw"],
        "SEALSTREAM_WORKER_SIGNED_TOPIC": topics["signed"],
        "SEALSTREAM_WORKER_DLQ_TOPIC": topics["dlq"],
        "SEALSTREAM_WORKER_CHECKPOINTS_TOPIC": topics["checkpoints"],
        "SEALSTREAM_WORKER_DATA_DIR": str(work / app_id),
        "SEALSTREAM_WORKER_POLICY_FILE": str(ROOT / "config" / "policy.yaml"),
        "SEALSTREAM_WORKER_ROUTES_FILE": str(ROOT / "config" / "routes.yaml"),
        "SEALSTREAM_WORKER_TENANTS_FILE": str(ROOT / "config" / "tenants.yaml"),
    }
    with (work / f"{app_id}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
    if on_start is not None:
        on_start(proc.pid)
    try:
        started = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = committed(stack, app_id, topics["raw"]) * frame
            if started is None and done > 0:
                started = (time.monotonic(), done)
            if done >= count:
                break
            time.sleep(0.5)
        assert started is not None, "the worker never committed"
        elapsed = time.monotonic() - started[0]
        return (count - started[1]) / elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _processor(stack: LocalStack, topics: dict[str, str], keys: KeySettings) -> Any:
    """The worker's Processor, built as the worker builds it."""
    settings = WorkerSettings(
        policy_file=ROOT / "config" / "policy.yaml",
        routes_file=ROOT / "config" / "routes.yaml",
        tenants_file=ROOT / "config" / "tenants.yaml",
        signed_topic=topics["signed"],
        checkpoints_topic=topics["checkpoints"],
    )
    processor, _ = build_processor(
        settings,
        RegistrySettings(url=stack.registry_url),
        load_hmac_keyring(keys),
        load_hmac_keyring(keys, "mask.json"),
    )
    return processor


def _clients(stack: LocalStack, tag: str, transactional: bool) -> tuple[Consumer, Producer]:
    """The plain loop's consumer (read_committed, manual commits) and idempotent producer,
    transactional when asked (transactions initialised)."""
    consumer = Consumer(
        kafka_config(
            stack,
            group_id=f"{tag}-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
    )
    config = kafka_config(stack, linger_ms=5, enable_idempotence=True, compression_type="lz4")
    if transactional:
        config["transactional.id"] = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
    producer = Producer(config)
    if transactional:
        producer.init_transactions(30)
    return consumer, producer


def run_plain(
    stack: LocalStack,
    topics: dict[str, str],
    keys: KeySettings,
    count: int,
    transactional: bool = False,
) -> float:
    """The same work in a plain confluent-kafka loop: at-least-once (offsets committed
    asynchronously after each poll), or ``transactional``: exactly-once as Kafka defines it,
    one transaction per poll of up to 500 records, holding their outputs and the consumed
    offsets (``send_offsets_to_transaction``), as the worker's transactions do."""
    processor = _processor(stack, topics, keys)
    tag = "tx" if transactional else "plain"
    consumer, producer = _clients(stack, tag, transactional)
    out_topic = f"{topics['signed']}-{tag}"
    consumer.subscribe([topics["raw"]])
    heads: dict[int, ChainHead] = {}

    async def loop() -> float:
        done = 0
        started = None
        while done < count:
            # a short timeout: the last, partial poll waits it out (1 s was a quarter of a
            # framed run: 1,250 records end in a poll of 250)
            batch = consumer.consume(500, 0.05)
            if not batch:
                continue
            started = started or time.monotonic()
            if transactional:
                producer.begin_transaction()
            for msg, index, key, headers, value in _events(batch):
                source = Source(msg.topic() or "", msg.partition() or 0, msg.offset() or 0,
                                headers, index)  # fmt: skip
                signed = await processor.process(
                    value, source, heads.get(source.partition, ChainHead())
                )
                heads[source.partition] = signed.head
                producer.produce(out_topic, value=signed.value, key=key, partition=source.partition)
                done += 1
            producer.poll(0)
            if transactional:
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()),
                    consumer.consumer_group_metadata(),
                    30,
                )
                producer.commit_transaction(30)
            else:
                consumer.commit(asynchronous=True)
        producer.flush(60)
        return count / (time.monotonic() - (started or time.monotonic()))

    try:
        return asyncio.run(loop())
    finally:
        consumer.close()


def _events(batch: list[Any]) -> Iterator[tuple[Any, int | None, Any, dict[str, bytes], Any]]:
    """Each event of the consumed records: (record, index in its frame, key, headers, value)."""
    for msg in batch:
        value = msg.value()
        if is_frame(value):
            for index, framed in enumerate(decode_frame(value)):
                yield msg, index, framed.key, dict(framed.headers), framed.value
        else:
            yield msg, None, msg.key(), dict(msg.headers() or []), value


def fresh_topics(stack: LocalStack) -> dict[str, str]:
    """New raw, signed, dead-letter and checkpoint topics (and the plain loops' outputs), the
    worker's output schemas registered for them."""
    suffix = uuid.uuid4().hex[:6]
    topics = {k: f"bench-{k}-{suffix}" for k in ("raw", "signed", "dlq", "checkpoints")}
    admin = AdminClient(kafka_config(stack))
    names = [*topics.values(), topics["signed"] + "-plain", topics["signed"] + "-tx"]
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in names]).values():
        future.result(30)
    catalog = Catalog()
    with SchemaRegistryClient(stack.settings.registry_settings().client_config()) as client:
        for topic, schema in (
            (topics["signed"], catalog.signed_schema()),
            (topics["checkpoints"], catalog.checkpoint_schema()),
        ):
            client.register_schema(subject_for(topic, schema), Schema(json.dumps(schema), "AVRO"))
    return topics


def one_run(
    stack: LocalStack, keys: KeySettings, events: int, work: Path, frame: int = 1
) -> dict[str, Any]:
    """Fresh topics, ``events`` raw events (``frame`` per record), the plain loops then the
    worker over them."""
    topics = fresh_topics(stack)
    how = "one event per record" if frame == 1 else f"frames of {frame} events"
    with task(f"processor: producing {events:,} raw events, {how}"):
        produce_raw(stack, topics["raw"], events, frame)
    with task(f"processor: plain confluent-kafka loop, {how}"):
        plain = run_plain(stack, topics, keys, events)
    with task(f"processor: plain transactional confluent-kafka loop, {how}"):
        transactional = run_plain(stack, topics, keys, events, transactional=True)
    with task(f"processor: sealstream worker (faust, exactly-once), {how}"):
        worker = run_worker(stack, topics, keys, events, work, frame)
    prefix = "" if frame == 1 else "framed_"
    return {
        f"{prefix}worker_events_per_s": round(worker, 1),
        f"{prefix}plain_loop_events_per_s": round(plain, 1),
        f"{prefix}transactional_loop_events_per_s": round(transactional, 1),
        f"{prefix}ratio_worker_to_plain": round(worker / plain, 3),
        f"{prefix}ratio_worker_to_transactional": round(worker / transactional, 3),
    }


def run(
    stack: LocalStack | None = None, *, events: int = 20_000, runs: int = 3, frame: int = FRAME
) -> dict[str, Any]:
    """``runs`` times :func:`one_run` on ``stack`` (its own when None); medians."""
    work = RESULTS / "tmp" / "processor"
    work.mkdir(parents=True, exist_ok=True)
    keys = KeySettings(dir=work / "keys")
    own = stack is None
    stack = stack or bench_stack("processor", STACK_PORT)
    try:
        per_run = [
            {
                **one_run(stack, keys, events, work),
                **one_run(stack, keys, events // frame * frame, work, frame),
            }
            for _ in range(runs)
        ]
    finally:
        if own:
            stack.down()
    return {
        "benchmark": "processor",
        "machine": machine(),
        "events": events,
        "frame": frame,
        "n_runs": runs,
        **median_of(per_run),
        "note": "one worker process vs one plain loop, same Processor, same broker; the worker "
        "commits transactions (exactly-once); the plain loop is at-least-once, the transactional "
        "loop commits one transaction per poll of up to 500 records with their offsets; each "
        "figure is the median of the runs (the ratio is the median of the per-run ratios)",
    }


def _cell(result: dict[str, Any], key: str) -> str:
    value = result.get(key)
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value}"


def write(result: dict[str, Any], out: Path = RESULTS) -> None:
    rows = [
        ("sealstream worker (faust, exactly-once)", "worker_events_per_s"),
        ("plain confluent-kafka loop (same work, at-least-once)", "plain_loop_events_per_s"),
        ("plain transactional loop (same work, exactly-once)", "transactional_loop_events_per_s"),
        ("ratio worker / plain", "ratio_worker_to_plain"),
        ("ratio worker / transactional", "ratio_worker_to_transactional"),
    ]
    frame = result.get("frame", FRAME)
    table = "".join(
        f"| {label} | {_cell(result, key)} | {_cell(result, 'framed_' + key)} |\n"
        for label, key in rows
    )
    save(
        out,
        "processor",
        result,
        f"# Processor benchmark\n\nMachine: {describe(result['machine'])}. "
        f"{result['events']:,} events, {PARTITIONS} partitions, {result['n_runs']} run(s).\n\n"
        f"| events/s | one event per record | frames of {frame} events |\n|---|---:|---:|\n"
        + table
        + f"\n{result['note']}.\n",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frame", type=int, default=FRAME, help="events per framed record")
    args = parser.parse_args()
    result = run(events=args.events, runs=args.runs, frame=args.frame)
    write(result)
    console.print((RESULTS / "processor.md").read_text())


if __name__ == "__main__":
    main()
