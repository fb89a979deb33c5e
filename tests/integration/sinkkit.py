"""Helpers for the sink tests: per-test topics and groups, sink subprocesses, oracles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from schemas.catalog import Catalog, subject_for
from schemas.samples import signed_chain
from schemas.serde import Encoder
from sealstream.keys import HmacKeyring
from tests.integration.conftest import free_port, register_repo_schemas

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3


class Sinks:
    """Topics, groups and directories of one test, and the sink processes running on them."""

    def __init__(self, stack: Any, tmp: Path, **env: str) -> None:
        self.stack = stack
        self.tmp = tmp
        register_repo_schemas(stack)
        tag = uuid.uuid4().hex[:8]
        self.topics = {
            "signed": f"signed-{tag}",
            "decisions": f"decisions-{tag}",
            "dlq": f"dlq-{tag}",
            "checkpoints": f"checkpoints-{tag}",
            "sink_dlq": f"sinkdlq-{tag}",
            "receipts": f"receipts-{tag}",
            "raw": f"raw-{tag}",  # where operator actions are published as events
            "replays": f"replays-{tag}",  # dead-letter replay markers
        }
        admin = AdminClient(stack.kafka_settings().client_config())
        futures = admin.create_topics(
            [
                NewTopic(t, num_partitions=PARTITIONS, replication_factor=1)
                for name, t in self.topics.items()
                if name != "replays"
            ]
            + [
                NewTopic(
                    self.topics["replays"], PARTITIONS, 1, config={"cleanup.policy": "compact"}
                )
            ]
        )
        for future in futures.values():
            future.result(30)
        self.query_port = free_port()
        self.keys_dir = tmp / "keys"
        self.env = {
            **os.environ,
            **stack.kafka_env(),
            "SEALSTREAM_REGISTRY_URL": stack.registry_url,
            "SEALSTREAM_KEYS_DIR": str(self.keys_dir),
            "SEALSTREAM_SINK_SIGNED_TOPIC": self.topics["signed"],
            "SEALSTREAM_SINK_DECISIONS_TOPIC": self.topics["decisions"],
            "SEALSTREAM_SINK_DLQ_TOPIC": self.topics["dlq"],
            "SEALSTREAM_SINK_CHECKPOINTS_TOPIC": self.topics["checkpoints"],
            "SEALSTREAM_SINK_DEAD_LETTER_TOPIC": self.topics["sink_dlq"],
            "SEALSTREAM_SINK_RECEIPTS_TOPIC": self.topics["receipts"],
            "SEALSTREAM_WORKER_RAW_TOPIC": self.topics["raw"],
            "SEALSTREAM_SINK_REPLAYS_TOPIC": self.topics["replays"],
            "SEALSTREAM_WORKER_DLQ_REPLAYS_TOPIC": self.topics["replays"],
            "SEALSTREAM_SINK_CLICKHOUSE_GROUP": f"ch-{tag}",
            "SEALSTREAM_SINK_OBJECTS_GROUP": f"obj-{tag}",
            "SEALSTREAM_SINK_CLICKHOUSE_MAX_AGE_S": "0.3",
            "SEALSTREAM_SINK_OBJECTS_MAX_AGE_S": "0.5",
            "SEALSTREAM_SINK_BACKOFF_BASE_S": "0.2",
            "SEALSTREAM_SINK_BACKOFF_MAX_S": "1.0",
            "SEALSTREAM_CLICKHOUSE_EMBEDDED_DIR": str(tmp / "clickhouse"),
            "SEALSTREAM_CLICKHOUSE_QUERY_PORT": str(self.query_port),
            "SEALSTREAM_OBJECTS_URL": str(tmp / "objects"),
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self._signed_encoder: Encoder | None = None

    # -- processes --------------------------------------------------------------------------

    def start(self, kind: str, **env: str) -> subprocess.Popen[bytes]:
        """Start a sink; a restarted one keeps its static member id (no session wait)."""
        env = {"SEALSTREAM_SINK_INSTANCE_ID": f"{kind}-{self.topics['signed']}", **env}
        log = self.tmp / f"sink-{kind}-{len(self.logs)}.log"
        self.logs[kind] = log
        with log.open("wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", "sink", kind],
                env={**self.env, **env},
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[kind] = proc
        if kind == "clickhouse" and env.get("SEALSTREAM_CLICKHOUSE_QUERY_PORT", "1") != "0":
            self.wait_endpoint(proc)
        return proc

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``sealstream ARGS`` with this test's settings."""
        return subprocess.run(
            [sys.executable, "-m", "ops.cli", *args],
            env={**self.env, "COLUMNS": "200"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def wait_endpoint(self, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"clickhouse sink exited: {self.log_text('clickhouse')}")
            try:
                httpx.get(f"http://127.0.0.1:{self.query_port}/healthz", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("query endpoint did not come up")

    def stop(self, kind: str, timeout_s: float = 60) -> int:
        proc = self.procs.pop(kind)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout_s)

    def wait_exit(self, kind: str, timeout_s: float = 60) -> int:
        return self.procs.pop(kind).wait(timeout_s)

    def stop_all(self) -> None:
        for kind in list(self.procs):
            proc = self.procs.pop(kind)
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)

    def log_text(self, kind: str) -> str:
        return self.logs[kind].read_text(errors="replace")[-4000:]

    # -- data -------------------------------------------------------------------------------

    def signed_encoder(self) -> Encoder:
        if self._signed_encoder is None:
            schema = Catalog().signed_schema()
            with SchemaRegistryClient(self.stack.registry_config()) as client:
                schema_id = client.register_schema(
                    subject_for("events.signed", schema), Schema(json.dumps(schema), "AVRO")
                )
            self._signed_encoder = Encoder(schema_id, schema)
        return self._signed_encoder

    def produce_signed(
        self, per_partition: int, routes: tuple[str, ...] = ("both",), poison: int = 0
    ) -> dict[int, list[dict[str, Any]]]:
        """A valid chain per partition; ``poison`` undecodable records on partition 0 too."""
        keys = HmacKeyring("k1", {"k1": b"s" * 32})
        encoder = self.signed_encoder()
        producer = Producer(self.stack.kafka_settings().client_config(enable_idempotence=True))
        chains = {}
        for partition in range(PARTITIONS):
            records = signed_chain(per_partition, f"events.raw/{partition}", keys, routes=routes)
            for record in records:
                producer.produce(
                    self.topics["signed"],
                    encoder.encode(record),
                    f"{record['tenant']}:x".encode(),
                    partition=partition,
                )
            chains[partition] = records
        for i in range(poison):
            producer.produce(self.topics["signed"], b"\x00garbage" + bytes([i]), partition=0)
        assert producer.flush(30) == 0
        return chains

    def operator_actions(self) -> list[dict[str, Any]]:
        """The operator_action events published to this test's raw topic (payloads)."""
        from schemas.serde import Decoder, registry_lookup
        from sealstream.follow import read_to_end

        with SchemaRegistryClient(self.stack.registry_config()) as registry:
            decoder = Decoder(registry_lookup(registry))
            events = [
                decoder.decode(m.value() or b"")[1]
                for m in read_to_end(self.stack.kafka_settings(), self.topics["raw"])
            ]
        return [e["payload"] for e in events if e["event_type"] == "operator_action"]

    def produce_dead_letters(self, count: int) -> None:
        producer = Producer(self.stack.kafka_settings().client_config())
        for i in range(count):
            producer.produce(
                self.topics["dlq"],
                b"\x07not-wire-format",
                headers=[
                    ("dlq.reason", b"unknown_schema"),
                    ("dlq.stage", b"decode"),
                    ("dlq.error_class", b"PoisonMessage"),
                    ("dlq.topic", b"events.raw"),
                    ("dlq.partition", b"0"),
                    ("dlq.offset", str(i).encode()),
                    ("dlq.attempts", b"1"),
                    ("dlq.last_failure_ms", str(int(time.time() * 1000)).encode()),
                    ("tenant", b"acme"),
                    ("event_type", b"payment"),
                ],
            )
        assert producer.flush(30) == 0

    # -- oracles ----------------------------------------------------------------------------

    def committed(self, group: str, topics: Iterable[str]) -> tuple[int, int, list[str]]:
        """(sum committed, sum of readable ends, pending metadata) over ``topics``. The readable
        end is after the last data record: transaction markers also take offsets, and a sink
        commits the offset after the last record it read."""
        consumer = Consumer(
            self.stack.kafka_settings().client_config(
                group_id=group, isolation_level="read_committed", enable_auto_commit=False
            )
        )
        try:
            tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
            committed = consumer.committed(tps, timeout=10)
            ends = sum(self._readable_end(consumer, tp) for tp in tps)
            done = sum(max(tp.offset, 0) for tp in committed)
            pending = [tp.metadata for tp in committed if tp.metadata]
            return done, ends, pending
        finally:
            consumer.close()

    @staticmethod
    def _readable_end(consumer: Consumer, tp: TopicPartition) -> int:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        if high <= low:
            return high
        start = max(low, high - 20)  # the tail: records and a few transaction markers
        consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
        end = start
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                end = int(message.offset() or 0) + 1
            if consumer.position([tp])[0].offset >= high:
                break
        consumer.unassign()
        return end

    def wait_caught_up(self, kind: str, timeout_s: float = 120) -> None:
        group = self.env[
            "SEALSTREAM_SINK_CLICKHOUSE_GROUP"
            if kind == "clickhouse"
            else "SEALSTREAM_SINK_OBJECTS_GROUP"
        ]
        topics = (
            [
                self.topics[t]
                for t in ("signed", "decisions", "dlq", "checkpoints", "receipts", "replays")
            ]
            if kind == "clickhouse"
            else [self.topics["signed"]]
        )
        deadline = time.monotonic() + timeout_s
        state: tuple[int, int, list[str]] = (0, 0, [])
        while time.monotonic() < deadline:
            proc = self.procs.get(kind)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{kind} sink exited {proc.returncode}: {self.log_text(kind)}")
            state = self.committed(group, topics)
            if state[0] == state[1] and not state[2]:
                return
            time.sleep(0.5)
        raise AssertionError(f"{kind} sink not caught up: {state}\n{self.log_text(kind)}")

    def query(self, sql: str, token: str, fmt: str = "json") -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{self.query_port}/v1/query",
            json={"sql": sql, "format": fmt},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    def metric(self, name: str) -> float:
        """A sample of the ClickHouse sink's Prometheus metrics (its query endpoint serves
        /metrics), summed over labels."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"http://127.0.0.1:{self.query_port}/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def token(self, tenant: str, roles: list[str], scopes: list[str] | None = None) -> str:
        """A token with ``roles`` and, unless given, the scope each role needs."""
        from sealstream.auth import Keyring, auth_settings, issue_token
        from sealstream.settings import KeySettings
        from sinks.clickhouse.endpoint import ANALYST_SCOPE, AUDITOR_SCOPE

        needed = {"analyst": ANALYST_SCOPE, "auditor": AUDITOR_SCOPE}
        scopes = scopes if scopes is not None else [needed.get(r, "query") for r in roles]
        auth = auth_settings(KeySettings(dir=self.keys_dir))
        return issue_token(Keyring.from_settings(auth), auth, "tester", tenant, scopes, roles, 600)

    def raw_sql(self, sql: str) -> list[list[Any]]:
        """Run SQL on the embedded engine in a separate process (the sink must be stopped:
        one process owns the engine at a time). Reads the raw tables, duplicates and all."""
        script = (
            "import json,sys,clickhouse_connect\n"
            "c=clickhouse_connect.get_client(dsn='chdb://'+sys.argv[1])\n"
            "print(json.dumps([list(r) for r in c.query(sys.argv[2]).result_rows], default=str))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, str((self.tmp / "clickhouse").resolve()), sql],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return list(json.loads(out.stdout.strip().splitlines()[-1]))


def rewrite_cold_file(root: Path, relative: str, edit: Any) -> None:
    """Tamper like an attacker who also fixes the manifest: ``edit(records, offsets)`` returns
    the new (records, offsets); the file is re-encoded and its manifest's sha256 and count
    updated, so only the chain can tell."""
    import hashlib
    import io

    import fastavro

    from sinks.objects.files import MANIFEST_SUFFIX, read_file

    path = root / relative
    records, offsets, schema = read_file(path.read_bytes())
    records, offsets = edit(records, offsets)
    buf = io.BytesIO()
    fastavro.writer(
        buf, schema, records, codec="deflate",
        metadata={"sealstream.record_offsets": ",".join(str(o) for o in offsets)},
    )  # fmt: skip
    path.write_bytes(buf.getvalue())
    manifest_path = root / (relative + MANIFEST_SUFFIX)
    manifest = json.loads(manifest_path.read_text())
    manifest.update(sha256=hashlib.sha256(buf.getvalue()).hexdigest(), records=len(records))
    manifest_path.write_text(json.dumps(manifest))
