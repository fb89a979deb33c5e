"""Dead-letter replay end to end: workers dead-letter what they cannot process, the cause is
fixed, the dry run predicts, the replay (interrupted once) does exactly that, and replaying
again stores nothing twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from sinks.objects.files import read_records
from streams.dlq import read_markers
from tests.integration.sinkkit import REPO, Sinks
from tests.integration.test_streams import RawProducer, Workers

pytestmark = pytest.mark.integration


def test_dry_run_predicts_the_replay_which_resumes_and_never_stores_twice(
    stack: Any, tmp_path: Path
) -> None:
    slow = f"slow{uuid.uuid4().hex[:6]}"
    workers = Workers(
        stack,
        tmp_path,
        SEALSTREAM_WORKER_FAULT_SLOW_TENANT=slow,
        SEALSTREAM_WORKER_MAX_ATTEMPTS="2",
        SEALSTREAM_WORKER_BACKOFF_BASE_S="0.05",
    )
    sinks = Sinks(stack, tmp_path)
    markers = sinks.topics["replays"]
    for name, topic in (
        ("signed", "events.signed"),
        ("dlq", "events.raw.dlq"),
        ("checkpoints", "audit.checkpoints"),
    ):
        sinks.topics[name] = workers.topics[topic]
        sinks.env[f"SEALSTREAM_SINK_{name.upper()}_TOPIC"] = workers.topics[topic]
    sinks.env.update(
        SEALSTREAM_WORKER_RAW_TOPIC=workers.topics["events.raw"],
        SEALSTREAM_WORKER_SIGNED_TOPIC=workers.topics["events.signed"],
        SEALSTREAM_WORKER_DLQ_TOPIC=workers.topics["events.raw.dlq"],
        SEALSTREAM_WORKER_TENANTS_TOPIC="",
    )
    try:
        workers.start()
        sinks.start("clickhouse")
        sinks.start("objects")
        producer = RawProducer(stack, workers.topics["events.raw"])
        # with a trace context, as the gateway writes it: the replay goes on in that trace
        trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        slow_ids, _ = producer.send(slow, 6, headers=[("traceparent", trace)])
        ok_ids, poison = producer.send(f"ok{uuid.uuid4().hex[:6]}", 20, poison_every=5)
        deadline = time.monotonic() + 120
        while True:
            stats = json.loads(sinks.cli("dlq", "stats", "--json").stdout)
            if stats["total"] == len(slow_ids) + poison:
                break
            assert time.monotonic() < deadline, stats
            time.sleep(1)
        assert stats["reason"] == {"enricher_timeout": 6, "unknown_schema": 4}

        # the cause is fixed: workers without the hanging enricher
        workers.stop_all()
        workers.extra_env = {}
        workers.start()

        dry = sinks.cli("dlq", "replay", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        predicted = json.loads(dry.stdout)
        assert (predicted["pass"], predicted["fail"], predicted["stored"]) == (6, 4, 0)
        assert predicted["fail_reasons"] == {"unknown_schema": 4}
        assert {p["event_id"] for p in predicted["letters"] if p["outcome"] == "pass"} == slow_ids

        # interrupted: one record per second, killed after about two
        with (tmp_path / "replay1.log").open("wb") as out:
            first = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ops.cli",
                    "dlq",
                    "replay",
                    "--rate",
                    "1",
                    "--batch",
                    "1",
                    "--json",
                ],
                env=sinks.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not read_markers(stack.kafka_settings(), markers):  # killed once it has begun
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        resumed = json.loads(sinks.cli("dlq", "replay", "--json").stdout)
        done_before = resumed["replayed"]
        assert 0 < done_before < 6, resumed  # the killed run got some way, not all of it
        assert resumed["published"] == 6 - done_before and resumed["fail"] == 4

        again = json.loads(sinks.cli("dlq", "replay", "--json").stdout)
        assert (again["published"], again["replayed"], again["fail"]) == (0, 6, 4)

        # every replayed event stored, once, hot and cold; no new dead letters
        sinks.wait_caught_up("objects")
        deadline = time.monotonic() + 120
        while True:
            hot = sinks.query(
                f"SELECT count() FROM events WHERE tenant = '{slow}'",
                sinks.token("x", ["auditor"]),
            ).json()["rows"][0][0]
            cold = [
                r["event_id"]
                for p in (tmp_path / "objects").rglob(f"tenant={slow}/**/*.avro")
                for r in read_records(p.read_bytes())
            ]
            if len(cold) >= 6 and hot >= 6:  # payments are confidential: routed both
                break
            assert time.monotonic() < deadline, (hot, cold)
            time.sleep(1)
        sinks.wait_caught_up("clickhouse")
        assert sorted(cold) == sorted(slow_ids)
        assert json.loads(sinks.cli("dlq", "stats", "--json").stdout)["total"] == 10
        assert sinks.stop("clickhouse") == 0
        rows = sinks.raw_sql(
            f"SELECT count(), uniqExact(event_id) FROM sealstream.events WHERE tenant = '{slow}'"
        )
        assert [int(v) for v in rows[0]] == [6, 6]  # each replayed event once, hot
        # the operator actions went through the pipeline as events: signed, chained, stored
        actions = sinks.raw_sql(
            "SELECT JSONExtractString(payload, 'action') AS a, count() FROM sealstream.events "
            "WHERE tenant = 'sealstream' AND event_type = 'operator_action' GROUP BY a ORDER BY a"
        )
        assert {str(a) for a, _ in actions} >= {"dlq_replay", "dlq_replay_dry_run"}
        verified = sinks.cli("verify", "--json")  # the whole pipeline's output verifies
        assert verified.returncode == 0, verified.stdout[-3000:]
        # (after verify: a lookup is an operator action, published as an event)
        # the audit trail of a replayed event tells its dead-letter history and the replay
        replayed = sorted(slow_ids)[0]
        trail = json.loads(sinks.cli("audit", replayed, "--json").stdout)
        assert trail["read_from"] == "clickhouse"  # the sink is stopped: the engine itself
        [letter] = trail["dead_letters"]
        assert letter["reason"] == "enricher_timeout"
        assert letter["dead_letter"]["topic"] == workers.topics["events.raw.dlq"]
        assert [a["status"] for a in letter["operator_actions"]] == ["replayed"]
        assert trail["processing"]["source"]["offset"] != letter["source"]["offset"]
        # signed after the replay by a worker span in the trace the event first came with
        assert trail["trace"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert trail["trace"]["span_id"] not in ("", "00f067aa0ba902b7")
        assert ok_ids  # the good traffic was never touched by any of this
    finally:
        sinks.stop_all()
        workers.stop_all()
