"""Events a storage outage took from the embedded engine after the sink had committed their
batch, read back from Kafka at the restart (sinks/clickhouse/recover.py; docs/faults.md, "the
in-flight insert's events part written empty"). The real schema and the sink's insert path
with its tokens: a batch's parts in ``events``, ``events_by_id`` and the rollup left as chDB
left them in the fault suite (every file empty), a real refused insert (RLIMIT_FSIZE 0 in the
child process), the batch's offsets committed, then a restart in a new process with a fake
Kafka that holds what the sink committed. Afterwards every committed event is in ``events``
once, the rollup counts each once, and the runner's rebuild of a batch changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

COMMON = """
import base64, json, os, resource, signal, sys, time
from pathlib import Path
from schemas.samples import signed_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import ClickHouseSettings, SinkSettings
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
from sinks.clickhouse.outages import OutageLog, marker_path
from sinks.clickhouse.recover import Restorer
from sinks.clickhouse.sink import ClickHouseStore
from sinks.runner import Batch, StoreUnavailable, RestartToRepair
from tests.unit.test_sinks_parts import FakeMessage, codec

engine = Path(sys.argv[1])
state_file = engine.with_name("kafka.json")  # what Kafka holds, for the restarted process
settings = ClickHouseSettings(embedded_dir=engine, hot_retention_days=3650)
client = connect(settings)
migrate(client, settings)
encoder, decoder = codec()
store = ClickHouseStore(client, settings, SinkSettings(), decoder, "g", {})
store.outage_log = OutageLog(marker_path(engine))
TOPIC = SinkSettings().signed_topic

def q(sql):
    return client.query(sql).result_rows

def counts():
    return {
        "ids": q("SELECT uniqExact(event_id) FROM sealstream.events")[0][0],
        "rows": q("SELECT count() FROM sealstream.events")[0][0],
        "rollup": int(q("SELECT sum(events) FROM sealstream.events_minutely")[0][0] or 0),
        "by_id": q("SELECT uniqExact(event_id) FROM sealstream.events_by_id")[0][0],
    }

def batch(records, partition, first):
    b = Batch(TOPIC, partition)
    for i, (value, ts) in enumerate(records):
        b.add(FakeMessage(value, first + i, TOPIC, partition, [], ts))
    return b

class FakeReader:
    \"\"\"Kafka as recover.Reader reads it: records, the group's committed offsets.\"\"\"

    def __init__(self, state):
        self.state = state

    def _records(self, topic, p):
        return [tuple(r[:3]) for r in self.state["records"].get(topic, {}).get(str(p), [])]

    def _headers(self, topic, p, offset):
        for r in self.state["records"].get(topic, {}).get(str(p), []):
            if r[0] == offset and len(r) > 3:
                return [(k, base64.b64decode(v)) for k, v in r[3]]
        return []

    def partitions(self, topic):
        return sorted(int(p) for p in self.state["records"].get(topic, {})) or [0]

    def committed(self, topic, partitions):
        c = self.state["committed"].get(topic, {})
        return {p: tuple(c.get(str(p), [-1001, ""])) for p in partitions}

    def offsets_at(self, topic, partitions, ms):
        out = {}
        for p in partitions:
            recs = self._records(topic, p)
            out[p] = next((o for o, t, _ in recs if t >= ms), recs[-1][0] + 1 if recs else 0)
        return out

    def earliest(self, topic, partitions):
        return {p: (self._records(topic, p) or [(0,)])[0][0] for p in partitions}

    def read(self, topic, p, first, last):
        for o, t, v in self._records(topic, p):
            if first <= o <= last:
                yield FakeMessage(base64.b64decode(v), o, topic, p, self._headers(topic, p, o), t)

    def close(self):
        pass
"""

BEFORE = (
    COMMON
    + """
scenario = sys.argv[2]
KEYS = HmacKeyring("k1", {"k1": b"k" * 32})
now_ms = int(time.time() * 1000)
records = [(encoder.encode(r), now_ms) for r in signed_chain(
    35, "events.raw/0", KEYS, tenants=("acme",), start_ms=now_ms - 5000)]
p0 = records[:30]  # events.signed[0]: batches 0-9, 10-13 (the one that breaks), 14-29
p1 = records[30:]  # events.signed[1]: one batch, 0-4
client.command("SYSTEM STOP MERGES")  # one part per insert, as while merges were stopped

def write(b):  # the runner's write: the store, then on_batch
    store.write(b)
    store.outage_log.written(b)

if scenario == "crash-first":  # the partition's first batch is the one that breaks
    write(batch(p0[:14], 0, 0))
else:
    write(batch(p0[:10], 0, 0))
    write(batch(p0[10:14], 0, 10))
# the insert in flight when the limit fell: chDB committed its parts with every file empty
tables = ["events", "events_by_id"] + ([] if scenario == "rollup-whole" else
                                       ["events_minutely_state"])
emptied = []
for table in tables:
    name, path = q("SELECT name, path FROM system.parts WHERE database = 'sealstream' AND active "
                   f"AND table = '{table}' ORDER BY max_block_number DESC LIMIT 1")[0]
    for f in Path(path).iterdir():
        open(f, "w").close()
    emptied.append([table, name])
# then the sink could not write a byte: the next insert is refused
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
try:
    store.write(batch(p0[14:], 0, 14))
    refused = False
except StoreUnavailable:
    refused = True
since = time.time()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
state = {"records": {TOPIC: {"0": [[i, ts, base64.b64encode(v).decode()] for i, (v, ts)
                                   in enumerate(p0)],
                             "1": [[i, ts, base64.b64encode(v).decode()] for i, (v, ts)
                                   in enumerate(p1)]}}}
if scenario.startswith("crash"):
    # killed during the outage: the flush had committed both partitions' pending ranges,
    # events.signed[0] 10-13 (written, broken) and [1] 0-4 (refused, never stored)
    first_pending = "0-13" if scenario == "crash-first" else "10-13"
    state["committed"] = {TOPIC: {"0": [int(first_pending.split("-")[0]),
                                        f"sealstream:pending:{first_pending}"],
                                  "1": [0, "sealstream:pending:0-4"]}}
    marker = None
else:
    write(batch(p0[14:], 0, 14))  # storage back: the retry is accepted
    write(batch(p1, 1, 0))
    try:
        store.after_outage(since)
        restart = False
    except RestartToRepair:
        restart = True
    marker = json.loads(marker_path(engine).read_text())
    state["committed"] = {TOPIC: {"0": [30, ""], "1": [5, ""]}}  # every batch committed
# what the runner writes after the restart: the pending ranges rebuilt, then on
state["runner"] = ([[0, 0, 13], [0, 14, 29]] if scenario == "crash-first" else
                   [[0, 0, 9], [0, 10, 13], [0, 14, 29]]) + [[1, 0, 4]]
state_file.write_text(json.dumps(state))
crashed = scenario.startswith("crash")
print(json.dumps({"emptied": emptied, "refused": refused, "restart": not crashed and restart,
                  "spans": marker and marker["spans"]}))
"""
)

RESTART = (
    COMMON
    + """
from sinks.clickhouse.parts import repair_at_start
mode = sys.argv[2]
reader = FakeReader(json.loads(state_file.read_text()))
restorer = Restorer(store, lambda: reader, marker_path(engine))
if mode == "interrupted":  # killed right after the rows went in, before the repair was done
    write_again = store.write_again
    def dies(*args):
        write_again(*args)
        os._exit(3)
    store.write_again = dies
if mode == "without-restore":  # the code before the fix: the rows are reported lost
    first = repair_at_start(client, "sealstream")
else:
    first = repair_at_start(client, "sealstream", restorer)
    restorer.finish()
repaired = counts()
# the runner then goes on: batches of the window written again with their own tokens (a
# pending range rebuilt after a crash) are dropped
for p, first_offset, last_offset in reader.state["runner"]:
    recs = reader.state["records"][TOPIC][str(p)]
    part = [(base64.b64decode(v), t) for o, t, v in recs if first_offset <= o <= last_offset]
    store.write(batch(part, p, first_offset))
rebuilt = counts()
again = repair_at_start(client, "sealstream", restorer)  # the next start
print(json.dumps({"first": first.as_dict(), "repaired": repaired, "rebuilt_runner": rebuilt,
                  "again": again.as_dict(), "marker": marker_path(engine).exists()}))
"""
)


DEAD_LETTERS = (
    COMMON
    + """
from sealstream.deadletters import DeadLetterHeaders
from sinks.clickhouse.parts import repair_at_start
TOPIC = SinkSettings().dlq_topic  # events.raw.dlq -> dead_letters, and its per-minute rollup

def dead_counts():
    return {
        "rows": q("SELECT count() FROM sealstream.dead_letters")[0][0],
        "rollup": int(q("SELECT sum(dead_letters) FROM sealstream.dead_letters_minutely")[0][0]
                      or 0),
    }

def letters(first, n, ts):
    out = []
    for o in range(first, first + n):
        h = DeadLetterHeaders(reason="undecodable", stage="worker", message="bad",
                              topic="events.raw", offset=o, last_failure_ms=ts).to_headers()
        out.append(FakeMessage(b"\\x00bad", o, TOPIC, 0, [*h, ("tenant", b"acme")], ts))
    return out

if sys.argv[2] == "before":
    client.command("SYSTEM STOP MERGES")
    ts = int(time.time() * 1000)
    batches = []
    for first, n in ((0, 5), (5, 3), (8, 4)):
        b = Batch(TOPIC, 0)
        for m in letters(first, n, ts):
            b.add(m)
        batches.append(b)
    for b in batches[:2]:
        store.write(b)
        store.outage_log.written(b)
    for table in ("dead_letters", "dead_letters_minutely_state"):  # the 3 of 5-7, written empty
        path = q("SELECT path FROM system.parts WHERE database = 'sealstream' AND active "
                 f"AND table = '{table}' ORDER BY max_block_number DESC LIMIT 1")[0][0]
        for f in Path(path).iterdir():
            open(f, "w").close()
    since = time.time()  # the next insert was refused; then it is accepted
    store.write(batches[2])
    store.outage_log.written(batches[2])
    try:
        store.after_outage(since)
    except RestartToRepair:
        pass
    state = {"records": {TOPIC: {"0": [[m.offset(), ts, base64.b64encode(m.value()).decode(),
                                        [[k, base64.b64encode(v).decode()] for k, v in m.headers()]]
                                       for b in batches for m in b.records]}},
             "committed": {TOPIC: {"0": [12, ""]}}}
    state_file.write_text(json.dumps(state))
    print(json.dumps({"marker": marker_path(engine).exists()}))
else:
    reader = FakeReader(json.loads(state_file.read_text()))
    restorer = Restorer(store, lambda: reader, marker_path(engine))
    first = repair_at_start(client, "sealstream", restorer)
    restorer.finish()
    print(json.dumps({"first": first.as_dict(), "counts": dead_counts()}))
"""
)


def run(script: str, *args: str, code: int = 0) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == code, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1])) if code == 0 else {}


WHOLE = {"ids": 35, "rows": 35, "rollup": 35, "by_id": 35}


@pytest.mark.parametrize("scenario", ["all-parts", "rollup-whole"])
def test_events_of_a_committed_batch_broken_in_an_outage_are_read_back_from_kafka(
    tmp_path: Path, scenario: str
) -> None:
    """all-parts is the fault suite's loss (docs/faults.md): the 4-event batch written just
    before the limit fell had all three parts committed empty, its offsets were committed,
    and the restart reported its events lost. rollup-whole: the rollup's part of that insert
    survived, so writing the rows again must not count them a second time."""
    engine = tmp_path / "engine"
    before = run(BEFORE, str(engine), scenario)
    assert before["refused"] and before["restart"]  # after_outage asked for a restart
    # the marker names every batch written since the margin before the refused insert
    assert sorted(before["spans"]) == [
        ["events.signed", 0, 0, 9],
        ["events.signed", 0, 10, 13],
        ["events.signed", 0, 14, 29],
        ["events.signed", 1, 0, 4],
    ]
    after = run(RESTART, str(engine), "fixed")
    assert after["first"]["lost"] == [], after["first"]
    assert [r.split()[0] for r in after["first"]["restored"]] == ["events"], after["first"]
    assert "4 rows read back from Kafka" in after["first"]["restored"][0]
    assert after["repaired"] == WHOLE  # every committed event once, counted once
    assert after["rebuilt_runner"] == WHOLE  # the same batches again: dropped by their tokens
    assert after["again"] == {"set_aside": [], "rebuilt": [], "lost": []}
    assert not after["marker"]


def test_without_reading_back_the_batch_is_lost_and_writing_it_again_is_dropped(
    tmp_path: Path,
) -> None:
    """The negative control: the repair as it was (no restore) names the events part lost,
    and the batch written again with its own token is dropped (the table remembers it)."""
    engine = tmp_path / "engine"
    run(BEFORE, str(engine), "all-parts")
    after = run(RESTART, str(engine), "without-restore")
    assert [r.split()[0] for r in after["first"]["lost"]] == ["events"]
    assert after["repaired"]["ids"] == 31
    assert after["rebuilt_runner"]["ids"] == 31


def test_a_recovery_interrupted_after_writing_is_done_again_without_copies(
    tmp_path: Path,
) -> None:
    """Killed right after the rows went in (before the views were recomputed, the parts
    dropped and the marker removed): the next start finds the rows back, inserts nothing,
    and recomputes the rollup, which counts each event once."""
    engine = tmp_path / "engine"
    run(BEFORE, str(engine), "all-parts")
    run(RESTART, str(engine), "interrupted", code=3)
    marker = json.loads((tmp_path / "engine.outage.json").read_text())
    assert marker["attempts"] == 1 and marker["inserted"] == ["events"]
    after = run(RESTART, str(engine), "fixed")
    assert after["first"]["lost"] == [], after["first"]
    assert "0 rows read back" in after["first"]["restored"][0]
    assert after["repaired"] == WHOLE
    assert after["rebuilt_runner"] == WHOLE
    assert not after["marker"]


@pytest.mark.parametrize("scenario", ["crash", "crash-first"])
def test_killed_during_the_outage_without_a_marker_the_pending_batches_are_restored(
    tmp_path: Path, scenario: str
) -> None:
    """No marker (the process died while nothing could be written): the window comes from the
    set-aside part's own files. The broken batch was still a pending range: written as the
    runner will write it, its token is dropped, so its rows go in with a token of their own;
    the other partition's pending batch, never stored, goes in with its own token, and the
    runner's rebuild of both afterwards is dropped. crash-first: the broken batch was the
    partition's first, so nothing of the topic was committed before it."""
    engine = tmp_path / "engine"
    before = run(BEFORE, str(engine), scenario)
    assert before["refused"] and before["spans"] is None
    after = run(RESTART, str(engine), "fixed")
    assert after["first"]["lost"] == [], after["first"]
    assert [r.split()[0] for r in after["first"]["restored"]] == ["events"]
    # 0-9 and 10-13 of partition 0 (10-13 read back), 0-4 of partition 1 (pending, stored)
    assert after["repaired"] == {"ids": 19, "rows": 19, "rollup": 19, "by_id": 19}
    # then the runner writes on: 14-29 of partition 0 are new, the pending ones are dropped
    assert after["rebuilt_runner"] == WHOLE


def test_dead_letters_a_broken_part_took_are_read_back_by_their_coordinates(
    tmp_path: Path,
) -> None:
    """Not only events: a dead-letters batch (rows by Kafka coordinates; the value is not even
    decodable) committed empty in ``dead_letters`` and its per-minute rollup comes back, and
    the rollup counts each dead letter once."""
    engine = tmp_path / "engine"
    assert run(DEAD_LETTERS, str(engine), "before")["marker"]
    after = run(DEAD_LETTERS, str(engine), "restart")
    assert after["first"]["lost"] == [], after["first"]
    assert [r.split()[0] for r in after["first"]["restored"]] == ["dead_letters"]
    assert "3 rows read back" in after["first"]["restored"][0]
    assert after["counts"] == {"rows": 12, "rollup": 12}
