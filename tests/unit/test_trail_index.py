"""The audit trail's two sources agree: the ClickHouse sink's index (hot path) and ClickHouse
itself, for an event with a receipt, its request's decisions, a dead letter and its replay;
after a rebuild from ClickHouse too. Runs the embedded engine in a child (one per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = r"""
import datetime as dt, json, sys
from pathlib import Path
from schemas.catalog import Catalog
from schemas.samples import signed_chain
from schemas.serde import Decoder, Encoder
from sealstream.keys import HmacKeyring
from sealstream.settings import ClickHouseSettings, SinkSettings
from sinks.clickhouse.access import direct_reader
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
from sinks.clickhouse.sink import ClickHouseStore
from sinks.clickhouse.trail_index import TrailIndex
from sinks.runner import Batch
from sinks.service import index_writer, rebuild_index
from sinks.trail import IndexSource, StoreSource, audit_trail, source_for
sys.path.insert(0, str(Path(sys.argv[2])))
from test_sinks_parts import FakeMessage

work = Path(sys.argv[1])
keys = HmacKeyring("k1", {"k1": b"k" * 32})
catalog = Catalog()
schemas = {1: catalog.signed_schema(), 2: catalog.decision_schema()}
decoder = Decoder(lambda i: json.dumps(schemas[i]) if i in schemas else None)
signed_enc, decision_enc = Encoder(1, schemas[1]), Encoder(2, schemas[2])

settings = ClickHouseSettings(embedded_dir=work / "ch")
sink = SinkSettings()
client = connect(settings)
migrate(client, settings)
index = TrailIndex(work / "index.sqlite3")
index.rebuild(lambda table, columns: [])  # empty store: complete at once
store = ClickHouseStore(client, settings, sink, decoder, "g", {}, index_writer(index, 30))

events = signed_chain(3, "events.raw/0", keys)
target, other = events[0], events[1]
now = dt.datetime.fromtimestamp(target["received_at"] / 1000, dt.UTC)

def write(topic, messages):
    batch = Batch(topic, 0)
    for m in messages:
        batch.add(m)
    assert store.write(batch) == []

write(sink.signed_topic, [FakeMessage(signed_enc.encode(e), i, sink.signed_topic)
                          for i, e in enumerate(events)])
write(sink.receipts_topic, [FakeMessage(json.dumps({"event_id": e["event_id"],
      "tenant": e["tenant"], "seal": f"s{i}"}).encode(), i, sink.receipts_topic)
      for i, e in enumerate(events)])
def decision(e, action, offset, minutes=0):
    return FakeMessage(decision_enc.encode({
        "subject": "svc", "tenant": e["tenant"], "event_tenant": e["tenant"],
        "event_type": e["event_type"], "action": action, "decision": "ALLOW",
        "reason_code": "ALLOW_ROLE", "policy_version": "v3+abc", "request_id": e["request_id"],
        "correlation_id": e["correlation_id"],
        "decided_at": now + dt.timedelta(minutes=minutes), "client_ip": "10.0.0.1",
        "user_agent": None, "detail": None}), offset, sink.decisions_topic)
write(sink.decisions_topic, [decision(target, "publish", 0), decision(other, "publish", 1),
                             decision(target, "too_late", 2, minutes=30)])
dlq = FakeMessage(b"\x00raw", 7, sink.dlq_topic, _headers=[
    ("dlq.reason", b"enricher_timeout"), ("dlq.stage", b"enrich"), ("dlq.topic", b"events.raw"),
    ("dlq.partition", b"0"), ("dlq.offset", b"41"), ("dlq.attempts", b"3"),
    ("tenant", target["tenant"].encode()), ("event_id", target["event_id"].encode())])
write(sink.dlq_topic, [dlq])
class Marker(FakeMessage):
    def key(self):
        return f"{sink.dlq_topic}/0/7".encode()
write(sink.replays_topic, [Marker(json.dumps({"status": "replayed", "replay_id": "r-1",
      "by": "local:ops", "at_ms": target["received_at"] + 1000, "event_id": target["event_id"],
      "target": None}).encode(), 0, sink.replays_topic)])

read = direct_reader(client, settings.database)
def trail(source):
    found = audit_trail(source, target["event_id"], keys)
    found["stored"]["hot"].pop("stored_at")  # the index stamps its own write
    return {k: v for k, v in found.items() if k != "read_from"}

out = {"picked": source_for(read, index).name, "store": trail(StoreSource(read)),
       "index": trail(IndexSource(index))}
rebuilt = TrailIndex(work / "rebuilt.sqlite3")
out["counts"] = rebuild_index(rebuilt, client, settings.database)
out["rebuilt"] = trail(IndexSource(rebuilt))
rebuilt.invalidate()
out["picked_invalidated"] = source_for(read, rebuilt).name
out["missing"] = audit_trail(IndexSource(index), "no-such-event", keys)
print(json.dumps(out, default=str))
"""


def test_index_and_store_give_the_same_trail_with_dead_letters_and_replays(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["picked"] == "audit_index" and out["picked_invalidated"] == "clickhouse"
    assert out["index"] == out["store"] == out["rebuilt"]
    trail = out["index"]
    assert trail["processing"]["signature_valid"] is True
    assert trail["received"]["receipt"]["seal"] == "s0"
    # the request's decision, not the other request's nor one outside the time window
    assert [d["action"] for d in trail["authorization"]] == ["publish"]
    assert trail["authorization"][0]["policy_version"] == "v3+abc"
    [letter] = trail["dead_letters"]
    assert letter["reason"] == "enricher_timeout" and letter["source"]["offset"] == 41
    assert [a["status"] for a in letter["operator_actions"]] == ["replayed"]
    assert letter["operator_actions"][0]["replay_id"] == "r-1"
    assert out["counts"] == {
        "event": 3, "receipt": 3, "decision": 3, "dead_letter": 1, "replay": 1,
    }  # fmt: skip
    assert out["missing"] is None
