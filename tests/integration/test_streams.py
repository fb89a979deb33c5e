"""The stream processor as real `sealstream worker` processes against the real stack.

Events are produced straight to ``events.raw`` (as the gateway would), each test with its own
tenant-unique event ids, and read back from ``events.signed`` with read_committed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from schemas.catalog import Catalog, subject_for
from schemas.samples import payment_event
from schemas.serde import Decoder, Encoder, registry_lookup
from sealstream.integrity import ChainHead, canonical_json, walk_chain
from sealstream.keys import load_hmac_keyring
from sealstream.settings import KeySettings
from tests.integration.conftest import register_repo_schemas

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Workers:
    """Worker processes of one consumer group, started and killed by the test."""

    def __init__(self, stack: Any, tmp: Path, **extra_env: str) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.stack = stack
        self.tmp = tmp
        self.app_id = f"sealstream-test-{suffix}"
        self.topics = {
            name: f"{name}-{suffix}"
            for name in ("events.raw", "events.signed", "events.raw.dlq", "audit.checkpoints")
        }
        self.extra_env = extra_env
        self.keys = KeySettings(dir=tmp / "keys")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        self.restarted: set[int] = set()
        self._create_topics()

    def _create_topics(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        register_repo_schemas(self.stack)
        admin = AdminClient(self.stack.kafka_settings().client_config())
        futures = admin.create_topics([NewTopic(t, 3, 1) for t in self.topics.values()])
        for future in futures.values():
            future.result(30)
        catalog = Catalog()
        with SchemaRegistryClient(self.stack.registry_config()) as client:
            for topic, schema in (
                (self.topics["events.signed"], catalog.signed_schema()),
                (self.topics["audit.checkpoints"], catalog.checkpoint_schema()),
            ):
                client.register_schema(
                    subject_for(topic, schema), Schema(json.dumps(schema), "AVRO")
                )

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        env = {
            **os.environ,
            **self.stack.kafka_env(),
            "SEALSTREAM_REGISTRY_URL": self.stack.registry_url,
            "SEALSTREAM_KEYS_DIR": str(self.keys.dir),
            "SEALSTREAM_WORKER_APP_ID": self.app_id,
            "SEALSTREAM_WORKER_RAW_TOPIC": self.topics["events.raw"],
            "SEALSTREAM_WORKER_SIGNED_TOPIC": self.topics["events.signed"],
            "SEALSTREAM_WORKER_DLQ_TOPIC": self.topics["events.raw.dlq"],
            "SEALSTREAM_WORKER_CHECKPOINTS_TOPIC": self.topics["audit.checkpoints"],
            "SEALSTREAM_WORKER_PARTITIONS": "3",
            "SEALSTREAM_WORKER_DATA_DIR": str(self.tmp / f"w{n}"),
            "SEALSTREAM_WORKER_POLICY_FILE": str(ROOT / "config" / "policy.yaml"),
            "SEALSTREAM_WORKER_ROUTES_FILE": str(ROOT / "config" / "routes.yaml"),
            "SEALSTREAM_WORKER_TENANTS_FILE": str(ROOT / "config" / "tenants.yaml"),
            "SEALSTREAM_WORKER_CHECKPOINT_EVERY": "50",
            **self.extra_env,
        }
        log = (self.tmp / f"worker{n}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("worker*.log")))

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed.add(proc.pid)

    def supervise(self) -> None:
        """Restart workers that exited on their own, as the process supervisor does."""
        for proc in list(self.procs):
            if (
                proc.poll() is not None
                and proc.pid not in self.killed
                and proc.pid not in self.restarted
            ):
                self.restarted.add(proc.pid)
                self.start()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def workers(stack: Any, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(stack, tmp_path)
    yield group
    group.stop_all()


class RawProducer:
    def __init__(self, stack: Any, topic: str) -> None:
        self.topic = topic
        catalog = Catalog()
        self.schema = catalog.event_schema("payment")
        with SchemaRegistryClient(stack.registry_config()) as client:
            found = client.lookup_schema(
                subject_for("events.raw", self.schema), Schema(json.dumps(self.schema), "AVRO")
            )
        self.encoder = Encoder(int(found.schema_id), self.schema)
        self.producer = Producer(stack.kafka_settings().client_config(acks="all"))

    def send(
        self,
        tenant: str,
        count: int = 0,
        poison_every: int = 0,
        event_ids: list[str] | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> tuple[set[str], int]:
        """``count`` new events, or the events ``event_ids`` (again: same keys, so the same
        partitions, as a retry the gateway produced twice); ``headers`` on each of them."""
        now = dt.datetime.now(dt.UTC)
        ids: set[str] = set()
        poison = 0
        for i in range(len(event_ids) if event_ids is not None else count):
            if poison_every and i % poison_every == poison_every - 1:
                self.producer.produce(
                    self.topic,
                    value=b"\x00\x7f\xff\xff\xfe" + os.urandom(7),
                    key=tenant.encode(),  # id 2147483646: never registered
                )
                poison += 1
                continue
            event_id = event_ids[i] if event_ids is not None else str(uuid.uuid4())
            ids.add(event_id)
            record = payment_event(i, tenant, now, event_id)
            self.producer.produce(
                self.topic,
                value=self.encoder.encode(record),
                key=f"{tenant}:a{i % 5}".encode(),
                # as the gateway sets them (dead letters keep them: the audit trail's link)
                headers=[
                    ("correlation_id", f"c-{event_id}".encode()),
                    ("event_id", event_id.encode()),
                    *(headers or []),
                ],
            )
        assert self.producer.flush(30) == 0
        return ids, poison


def read_all(stack: Any, topic: str, decode: bool = True) -> list[tuple[int, int, Any, Any]]:
    """Every committed record of ``topic``: (partition, offset, value, headers)."""
    consumer = Consumer(
        stack.kafka_settings().client_config(
            group_id=f"read-{uuid.uuid4().hex}",
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in metadata.partitions
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
    out = []
    decoder = None
    with SchemaRegistryClient(stack.registry_config()) as client:
        if decode:
            decoder = Decoder(registry_lookup(client))
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                # read_committed may stop short of the high watermark (transaction markers)
                positions = consumer.position([TopicPartition(topic, p) for p in ends])
                done |= {tp.partition for tp in positions if tp.offset >= ends[tp.partition] - 1}
                continue
            if msg.error():
                continue
            value = decoder.decode(msg.value())[1] if decoder else msg.value()
            out.append((msg.partition(), msg.offset(), value, dict(msg.headers() or [])))
            if msg.offset() >= ends[msg.partition()] - 1:
                done.add(msg.partition())
    consumer.close()
    return out


def wait_signed(workers: Workers, ids: set[str], timeout_s: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = [v for _, _, v, _ in read_all(workers.stack, workers.topics["events.signed"])]
        mine = [r for r in records if r["event_id"] in ids]
        if {r["event_id"] for r in mine} >= ids or time.monotonic() > deadline:
            return mine
        workers.supervise()
        time.sleep(2)


def verify_chains(workers: Workers) -> dict[str, Any]:
    """Walk every chain in the signed topic from genesis; return the reports."""
    keyring = load_hmac_keyring(workers.keys)
    by_chain: dict[str, list[dict[str, Any]]] = {}
    signed = read_all(workers.stack, workers.topics["events.signed"])
    for _, _, record, _ in sorted(signed, key=lambda r: (r[0], r[1])):
        by_chain.setdefault(record["chain_id"], []).append(record)
    payloads = {}
    for records in by_chain.values():
        for r in records:
            payloads[r["event_id"]] = (
                json.loads(r["payload_json"]),
                json.loads(r["hot_payload_json"]),
            )
    return {
        cid: walk_chain(cid, recs, keyring, anchor=ChainHead(), payloads=payloads)
        for cid, recs in by_chain.items()
    }


def test_raw_to_signed_with_valid_chains_and_poison_to_dlq(stack: Any, workers: Workers) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    workers.start()
    ids, poison = RawProducer(stack, workers.topics["events.raw"]).send(
        tenant, 300, poison_every=100
    )
    signed = wait_signed(workers, ids)
    assert sorted(r["event_id"] for r in signed) == sorted(ids)  # each exactly once
    sample = signed[0]
    assert sample["payload_json"].count("@example.test") == 1  # cold copy keeps the original
    assert "@example.test" not in sample["hot_payload_json"]  # hot copy masked
    assert sample["masked_fields"] == ["card_last4", "payer_email"]
    assert sample["enrichment"]["classification"] == "confidential"
    reports = verify_chains(workers)
    assert reports and all(r.ok for r in reports.values()), [
        f for r in reports.values() for f in r.findings
    ][:5]
    assert sum(r.checked for r in reports.values()) == len(ids)
    # each signed record is a CloudEvent to the SDK's Kafka binding (binary content mode)
    from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
    from cloudevents.core.formats.json import JSONFormat

    raw_signed = read_all(stack, workers.topics["events.signed"], decode=False)
    _, _, value, headers = raw_signed[0]
    cloud = from_binary(KafkaMessage(headers, None, value), JSONFormat())
    record = next(r for r in signed if r["event_id"] == cloud.get_id())
    assert (cloud.get_type(), cloud.get_source()) == ("payment", f"sealstream:{record['producer']}")
    assert int(cloud.get_time().timestamp() * 1000) == record["occurred_at"]
    assert cloud.get_datacontenttype() == "application/avro" and cloud.get_data() == value
    # Signed checkpoints every 50 events per chain, naming real chain heads.
    keyring = load_hmac_keyring(workers.keys)
    checkpoints = [v for _, _, v, _ in read_all(stack, workers.topics["audit.checkpoints"])]
    assert checkpoints
    heads = {(r["chain_id"], r["seq"]): r["hash"] for r in signed}
    for cp in checkpoints:
        assert cp["seq"] % 50 == 0
        body = {k: cp[k] for k in ("chain_id", "seq", "head_hash", "created_at", "key_id")}
        assert keyring.verify(cp["key_id"], canonical_json(body), bytes.fromhex(cp["signature"]))
        if (cp["chain_id"], cp["seq"]) in heads:
            assert heads[(cp["chain_id"], cp["seq"])] == cp["head_hash"]
    dlq = workers.topics["events.raw.dlq"]
    dead = [
        (v, h)
        for _, _, v, h in read_all(stack, dlq, decode=False)
        if h.get("dlq.reason") in (b"undecodable", b"unknown_schema")
    ]
    assert len(dead) == poison
    value, headers = dead[-1]
    assert value.startswith(b"\x00\x7f\xff\xff\xfe") and len(value) == 12  # original bytes
    for name in (
        "dlq.error_class",
        "dlq.message",
        "dlq.stage",
        "dlq.topic",
        "dlq.partition",
        "dlq.offset",
        "dlq.attempts",
        "dlq.first_failure_ms",
        "dlq.last_failure_ms",
    ):
        assert name in headers
    # a new owner of the partition finds the newest dead letter's position (streams/heads.py)
    from streams.heads import WHOLE, dead_letter_position

    source = int(headers["dlq.partition"])
    found = dead_letter_position(
        stack.kafka_settings(), dlq, source % 3, workers.topics["events.raw"], source
    )
    newest = max(int(h["dlq.offset"]) for _, h in dead if int(h["dlq.partition"]) == source)
    assert found == (newest, WHOLE)


@pytest.mark.timeout(420)
def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    stack: Any, workers: Workers
) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    first = workers.start()
    workers.start()  # two workers share the three partitions
    producer = RawProducer(stack, workers.topics["events.raw"])
    ids, _ = producer.send(tenant, 1500)
    time.sleep(4)  # let them get going, then kill one mid-stream
    workers.kill(first)
    more, _ = producer.send(tenant, 500)
    ids |= more
    workers.start()
    signed = wait_signed(workers, ids, timeout_s=300)  # a killed txn can hold the LSO
    counts: dict[str, int] = {}
    for r in signed:
        counts[r["event_id"]] = counts.get(r["event_id"], 0) + 1
    assert set(counts) == ids, f"lost {len(ids - set(counts))} events"
    dups = sorted(
        (r["chain_id"], r["seq"], r["source_offset"]) for r in signed if counts[r["event_id"]] > 1
    )
    assert not dups, f"duplicates in events.signed (read_committed): {dups[:10]}"
    reports = verify_chains(workers)
    assert all(r.ok for r in reports.values()), [f for r in reports.values() for f in r.findings][
        :5
    ]
    assert sum(r.checked for r in reports.values()) == len(ids)  # no fork: one entry per event
    print(f"workers killed: 1, restarted after crashing on their own: {len(workers.restarted)}")


@pytest.mark.timeout(300)
def test_an_event_produced_twice_is_signed_once_also_after_a_restart(
    stack: Any, workers: Workers
) -> None:
    """The gateway produces a retried event again when it died before the client saw the 202
    (or before the receipt was persisted): the worker signs each (tenant, event_id) once,
    whether the copy comes while the first is still in flight or after a worker restart (the
    window then comes back from the committed output)."""
    tenant = f"t{uuid.uuid4().hex[:6]}"
    first = workers.start()
    producer = RawProducer(stack, workers.topics["events.raw"])
    batch = [str(uuid.uuid4()) for _ in range(200)]
    producer.send(tenant, event_ids=batch)
    producer.send(tenant, event_ids=batch)  # copies right behind the originals
    wait_signed(workers, set(batch))
    workers.kill(first)
    workers.start()
    producer.send(tenant, event_ids=batch)  # copies after the restart
    later, _ = producer.send(tenant, 100)
    signed = wait_signed(workers, set(batch) | later)  # the copies come first per partition
    counts = Counter(r["event_id"] for r in signed)
    assert set(counts) == set(batch) | later
    assert [i for i, n in counts.items() if n > 1] == []
    reports = verify_chains(workers)
    assert all(r.ok for r in reports.values()), [f for r in reports.values() for f in r.findings]
    assert sum(r.checked for r in reports.values()) == len(batch) + len(later)


def test_slow_enricher_times_out_into_retries_then_dlq(stack: Any, tmp_path: Path) -> None:
    slow = f"slow{uuid.uuid4().hex[:6]}"
    group = Workers(
        stack,
        tmp_path,
        SEALSTREAM_WORKER_FAULT_SLOW_TENANT=slow,
        SEALSTREAM_WORKER_MAX_ATTEMPTS="3",
        SEALSTREAM_WORKER_BACKOFF_BASE_S="0.05",
    )
    try:
        group.start()
        producer = RawProducer(stack, group.topics["events.raw"])
        slow_ids, _ = producer.send(slow, 3)
        good_ids, _ = producer.send(f"ok{uuid.uuid4().hex[:6]}", 20)
        signed = wait_signed(group, good_ids)
        assert {r["event_id"] for r in signed} == good_ids  # good traffic still flows
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dlq = group.topics["events.raw.dlq"]
            dead = [
                h
                for _, _, _, h in read_all(stack, dlq, decode=False)
                if h.get("dlq.reason") == b"enricher_timeout"
                and h.get("correlation_id", b"").decode().removeprefix("c-") in slow_ids
            ]
            if len(dead) == len(slow_ids):
                break
            time.sleep(2)
        assert len(dead) == len(slow_ids)
        assert all(h["dlq.attempts"] == b"3" and h["dlq.stage"] == b"enrich" for h in dead)
    finally:
        group.stop_all()


@pytest.mark.timeout(300)
def test_a_record_the_worker_did_not_sign_is_no_chain_head_to_resume_from(
    stack: Any, workers: Workers
) -> None:
    """Anyone else who may write events.signed (a super user; the ACLs let no other role)
    appends, on every partition, a record that claims the chain's next position and an input
    offset far ahead: one with a wrong signature, one signed right but of another chain. A
    worker resuming the chains must continue from its own last record: nothing skipped (the
    forged offset would skip every later event), every chain still verifies."""
    from sealstream.integrity import sign

    tenant = f"t{uuid.uuid4().hex[:6]}"
    first = workers.start()
    producer = RawProducer(stack, workers.topics["events.raw"])
    ids, _ = producer.send(tenant, 60)
    signed = wait_signed(workers, ids)
    workers.kill(first)

    keyring = load_hmac_keyring(workers.keys)
    schema = Catalog().signed_schema()
    topic = workers.topics["events.signed"]
    with SchemaRegistryClient(stack.registry_config()) as client:
        found = client.lookup_schema(subject_for(topic, schema), Schema(json.dumps(schema), "AVRO"))
    encoder = Encoder(int(found.schema_id), schema)
    forger = Producer(stack.kafka_settings().client_config())
    last = {}
    for record in sorted(signed, key=lambda r: r["seq"]):
        last[record["source_partition"]] = record
    forged_ids = set()
    for partition, record in last.items():
        for kind in ("bad-signature", "other-chain"):
            fake = {**record, "event_id": str(uuid.uuid4()), "source_offset": 10**9}
            head = ChainHead(int(record["seq"]), str(record["hash"]))
            if kind == "other-chain":
                fake["chain_id"] = f"elsewhere/{partition}"
            sign(fake, keyring, head)  # a valid signature of the record as it stands
            if kind == "bad-signature":
                fake["signature"] = "00" * 32
            forged_ids.add(fake["event_id"])
            headers = [("tenant", tenant.encode()), ("event_id", fake["event_id"].encode())]
            forger.produce(topic, encoder.encode(fake), partition=partition, headers=headers)
    assert forger.flush(30) == 0

    workers.start()
    later, _ = producer.send(tenant, 60)
    signed = [r for r in wait_signed(workers, ids | later) if r["event_id"] not in forged_ids]
    assert {r["event_id"] for r in signed} == ids | later, "events skipped after the forgery"
    assert len(signed) == len(ids | later)
    by_chain: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(signed, key=lambda r: (r["chain_id"], r["seq"])):
        by_chain.setdefault(record["chain_id"], []).append(record)
    for chain_id, records in by_chain.items():
        report = walk_chain(chain_id, records, keyring, anchor=ChainHead())
        assert report.ok, report.findings[:3]
    assert workers.log_text().count("not signed with this worker's keys") >= 1
