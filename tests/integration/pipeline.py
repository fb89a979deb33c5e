"""A whole pipeline for the fault suite: ``sealstream up --keep-stack`` in its own stack
directory and ports (Kafka, registry, gateway, a worker, both sinks, supervised), traffic
through the gateway with the retrying client, and the oracle that counts where every
acknowledged event ended up."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ops.upjob import PORTS, UpJob, wait_for
from tests.integration.conftest import free_ports


class Pipeline(UpJob):
    """:class:`UpJob` on free test ports, with the fault suite's process and store helpers."""

    subject = "fault-suite"

    def __init__(self, tmp: Path, **env: str) -> None:
        super().__init__(tmp, free_ports(len(PORTS)), **env)

    # -- processes --------------------------------------------------------------------------

    def kill(self, name: str) -> int:
        pid = int(self.services()[name]["pid"])
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout_s: float = 120) -> None:
        def back() -> bool:
            s = self.services().get(name, {})
            return bool(s.get("running")) and s.get("pid") not in (None, old_pid)

        wait_for(back, timeout_s, f"{name} to be restarted")

    def stack_pid(self, component: str) -> int:
        from ops.stack.local import LocalStack
        from sealstream.settings import StackSettings

        saved = LocalStack.saved_overrides(self.dir)
        local = LocalStack(StackSettings.model_validate({"dir": self.dir, **saved}))
        pid = {s.name: s.pid for s in local.status()}[component]
        assert pid is not None, f"{component} is not running"
        return int(pid)

    def log_count(self, service_prefix: str, text: str) -> int:
        """How often ``text`` occurs in the logs of the services named ``service_prefix*``
        (each log spans the service's restarts)."""
        return sum(
            Path(s["log"]).read_text(errors="replace").count(text)
            for name, s in self.services().items()
            if name.startswith(service_prefix)
        )

    # -- reading the stores ------------------------------------------------------------------

    def cold_occurrences(self, tenant: str = "acme") -> Counter[str]:
        from sinks.objects.files import read_records

        root = Path(self.settings_env.get("SEALSTREAM_OBJECTS_URL") or self.dir / "objects")
        return Counter(
            str(r["event_id"])
            for path in root.rglob(f"tenant={tenant}/**/*.avro")
            for r in read_records(path.read_bytes())
        )


@dataclass
class Traffic:
    """Events through the gateway at a steady pace with the retrying client (a retry sends the
    same event ids); every event answered 202 with a receipt is recorded."""

    pipeline: Pipeline
    batch: int = 10
    pause_s: float = 0.1
    acked: set[str] = field(default_factory=set)
    sent: int = 0
    gave_up: int = 0
    ack_times: list[float] = field(default_factory=list)  # monotonic, one per answered batch
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import random

        from ops.demo import event, payload
        from producers.client import PublishError, SealstreamClient

        rng = random.Random(1)
        token = self.pipeline.token("acme", ("publisher",), scopes=["events:write"])
        with SealstreamClient(
            self.pipeline.gateway_url, token, max_attempts=40, backoff_s=0.2, max_backoff_s=2.0
        ) as client:
            i = 0
            while not self._stop.is_set():
                kinds = ("payment", "login", "page_view")
                events = [
                    event("acme", kinds[(i + n) % 3], payload(kinds[(i + n) % 3], i + n, rng))
                    for n in range(self.batch)
                ]
                i += self.batch
                self.sent += len(events)
                try:
                    result = client.publish(events)
                    self.acked.update(r["event_id"] for r in result.receipts)
                    if result.receipts:
                        self.ack_times.append(time.monotonic())
                except PublishError:
                    self.gave_up += len(events)
                self._stop.wait(self.pause_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)

    def longest_gap_s(self) -> float:
        """The longest time between two answered batches (how long acceptance stalled)."""
        times = self.ack_times
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def inject_poison(pipeline: Pipeline, count: int) -> set[tuple[int, int]]:
    """``count`` undecodable records on events.raw; their (partition, offset)."""
    from confluent_kafka import Producer

    producer = Producer(pipeline.kafka_settings().client_config())
    where: set[tuple[int, int]] = set()

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        where.add((msg.partition(), msg.offset()))

    for i in range(count):
        producer.produce(
            "events.raw", b"\x00\x00\x00\x00\x63poison" + bytes([i % 256]),
            f"acme:{uuid.uuid4()}".encode(), on_delivery=delivered,
            headers=[("tenant", b"acme"), ("event_type", b"payment")],
        )  # fmt: skip
    assert producer.flush(30) == 0
    return where


# every case's outcome line, printed again in pytest's terminal summary (conftest.py), so the
# CI log shows the counts of passing cases too (their own output is captured)
REPORTED: list[str] = []


def report(case: str, text: str) -> None:
    """A fact of a case besides its counts (restarts, copies dropped), printed and repeated in
    the terminal summary with the outcome lines."""
    line = f"[{case}] {text}"
    REPORTED.append(line)
    print(line)


@dataclass
class Outcome:
    sent: int
    acked: int
    hot: int
    cold: int
    hot_duplicates: int
    cold_duplicates: int
    rollup_lost: int  # rows in events the per-minute rollup never counted
    missing_hot: int
    missing_cold: int
    dead_lettered: int
    verify_ok: bool
    # broken parts whose rows the ClickHouse sink found missing at a restart, in any table
    # (sinks/clickhouse/parts.py): the counts above only look at events
    hot_parts_lost: int = 0
    verify_detail: str = ""  # what verify found, when it was not clean

    def line(self, case: str) -> str:
        text = self._line(case)
        REPORTED.append(text)
        return text

    def _line(self, case: str) -> str:
        return (
            f"[{case}] sent {self.sent} / acknowledged {self.acked} / stored hot {self.hot} / "
            f"stored cold {self.cold} / duplicates hot {self.hot_duplicates} cold "
            f"{self.cold_duplicates} / missing hot {self.missing_hot} cold {self.missing_cold} / "
            + (f"rollup lost {self.rollup_lost} / " if self.rollup_lost else "")
            + (f"hot parts lost {self.hot_parts_lost} / " if self.hot_parts_lost else "")
            + f"dead-lettered {self.dead_lettered} / "
            + f"verify {'clean' if self.verify_ok else 'FAILED'}"
        )


def oracle(
    pipeline: Pipeline,
    traffic: Traffic,
    poison: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
    settle_s: float = 180,
    acked: set[str] | None = None,
) -> Outcome:
    """Wait until the stores settle, then count. Duplicates in ClickHouse are counted from the
    per-minute rollup (an AggregatingMergeTree: rows merged away by ReplacingMergeTree still
    count there), in cold storage from every record of every file."""
    acked = set(traffic.acked) if acked is None else acked

    def stored() -> tuple[set[str], Counter[str]]:
        hot_ids = {str(r[0]) for r in pipeline.query(
            "SELECT DISTINCT event_id FROM events WHERE tenant = 'acme'")}  # fmt: skip
        return hot_ids, pipeline.cold_occurrences()

    deadline = time.monotonic() + settle_s
    while True:
        try:
            hot_ids, cold = stored()
        except httpx.HTTPError:  # the ClickHouse sink is restarting
            hot_ids, cold = set(), Counter()
        if (acked <= hot_ids and acked <= set(cold)) or time.monotonic() > deadline:
            break
        time.sleep(2)

    def counts() -> tuple[int, int, int]:
        hot_ids, cold = stored()
        rollup = pipeline.query("SELECT sum(events) FROM events_minutely WHERE tenant = 'acme'")
        return len(hot_ids), sum(cold.values()), int(rollup[0][0] or 0)

    # late duplicates, if any, land too: count until two readings a second apart agree
    previous: list[tuple[int, int, int]] = []

    def stable() -> bool:
        previous.append(counts())
        return len(previous) > 1 and previous[-1] == previous[-2]

    with contextlib.suppress(AssertionError):  # still moving after 30 s: count what is there
        wait_for(stable, 30, "stable counts", every_s=1.0)
    hot_ids, cold = stored()
    rollup = counts()[2]
    dead = 0
    if poison:
        rows = pipeline.query("SELECT source_partition, source_offset FROM dead_letters")
        dead = sum(1 for p, o in rows if (int(p), int(o)) in poison)
    verified = pipeline.cli("verify", "all", "--json", check=False)
    return Outcome(
        sent=traffic.sent,
        acked=len(acked),
        hot=len(hot_ids),
        cold=len(cold),
        hot_duplicates=max(0, rollup - len(hot_ids)),
        rollup_lost=max(0, len(hot_ids) - rollup),
        cold_duplicates=sum(n - 1 for n in cold.values() if n > 1),
        missing_hot=len(acked - hot_ids),
        missing_cold=len(acked - set(cold)),
        dead_lettered=dead,
        verify_ok=verified.returncode == 0,
        hot_parts_lost=pipeline.log_count("sink-clickhouse", "are missing from the hot store"),
        verify_detail="" if verified.returncode == 0 else _verify_detail(verified),
    )


def _verify_detail(done: Any) -> str:
    """The first findings and the drift of a failed verify, for the assertion message."""
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return (done.stdout + done.stderr)[-2000:]
    return json.dumps(
        {"by_kind": report.get("by_kind"), "findings": report.get("findings", [])[:10],
         "drift": report.get("drift", [])[:5]}, default=str
    )[:4000]  # fmt: skip


def diagnose(pipeline: Pipeline) -> str:
    """Per partition: events.raw end and the workers' committed offset, events.signed end as
    written and as readable (read_committed: an open transaction holds it back)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient(pipeline.kafka_settings().client_config())
    lines = []
    for topic, group in (("events.raw", "sealstream-processor"),
                         ("events.signed", "sealstream-sink-clickhouse")):  # fmt: skip
        meta = admin.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        request = [ConsumerGroupTopicPartitions(group, tps)]
        committed = {
            tp.partition: tp.offset
            for tp in admin.list_consumer_group_offsets(request)[group].result(10).topic_partitions
        }
        # the last stable offset needs ListOffsets with READ_COMMITTED: a consumer's
        # get_watermark_offsets returns the high watermark whatever its isolation level
        ends: dict[str, dict[int, int]] = {}
        for isolation in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
            request = {tp: OffsetSpec.latest() for tp in tps}
            futures = admin.list_offsets(request, isolation_level=isolation, request_timeout=10)
            name = "read_committed" if isolation == IsolationLevel.READ_COMMITTED else (
                "read_uncommitted")  # fmt: skip
            ends[name] = {tp.partition: f.result().offset for tp, f in futures.items()}
        for p in sorted(meta.partitions):
            lines.append(
                f"{topic}[{p}] end {ends['read_uncommitted'][p]} readable "
                f"{ends['read_committed'][p]} committed by {group} {committed.get(p)}"
            )
    return "\n".join(lines)
