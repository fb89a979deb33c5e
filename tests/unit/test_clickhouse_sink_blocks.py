"""The ClickHouse sink never stalls on data it can never write: a batch spanning more days
than one insert block may hold is inserted in blocks (an attack run's 120-day batch made the
sink retry one refused insert for ever, every tenant's ingestion paused), each block again
exactly once; a row the store refuses for its content is found and handed back for the dead
letters while the rest of the batch is stored. On the embedded engine, in a child process
(one chDB engine per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = """
import json, sys
from schemas.samples import signed_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import ClickHouseSettings, SinkSettings
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
from sinks.clickhouse.sink import ClickHouseStore
from tests.unit.test_sinks_parts import batch_of, codec

KEYS = HmacKeyring("k1", {"k1": b"k" * 32})
DAY = 86_400_000
settings = ClickHouseSettings(embedded_dir=sys.argv[1], hot_retention_days=365)
client = connect(settings)
migrate(client, settings)
_, decoder = codec()
store = ClickHouseStore(client, settings, SinkSettings(), decoder, "g", {})
# 120 events, each on a day of its own
days = signed_chain(120, "events.raw/0", KEYS, ages_ms=tuple(i * DAY for i in range(120)))
first = store.write(batch_of(days))
again = store.write(batch_of(days))  # the same batch after a crash: nothing twice
count = lambda: client.query("SELECT count() FROM sealstream.events").result_rows[0][0]
out = {"first": len(first), "again": len(again), "rows": count(),
       "rollup": client.query("SELECT sum(events) FROM sealstream.events_minutely")
       .result_rows[0][0]}
# a record whose schema_id does not fit the UInt32 column: the store refuses that one row
bad = signed_chain(9, "events.raw/1", KEYS)
bad[4]["schema_id"] = -5
batch = batch_of(bad, start=500)
rejected = store.write(batch)
out["rejected"] = [(r.message.offset(), r.reason, r.detail[:200]) for r in rejected]
out["rows_after"] = count()
out["stored_ids"] = sorted(r[0] for r in client.query(
    "SELECT event_id FROM sealstream.events WHERE chain_id = 'events.raw/1'").result_rows)
out["expected_ids"] = sorted(r["event_id"] for i, r in enumerate(bad) if i != 4)
rejected_again = store.write(batch_of(bad, start=500))
out["rejected_again"] = [r.message.offset() for r in rejected_again]
out["rows_final"] = count()
print(json.dumps(out))
"""


def test_a_batch_over_many_days_is_stored_in_blocks_and_an_unwritable_row_is_handed_back(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "ch")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["first"], out["again"]) == (0, 0)
    assert out["rows"] == 120  # stored once, though inserted in three blocks, twice
    assert out["rollup"] == 120  # the materialized view counted each block once as well
    assert [(offset, reason) for offset, reason, _ in out["rejected"]] == [(504, "unwritable")]
    assert out["stored_ids"] == out["expected_ids"]  # the other eight are stored
    assert out["rows_after"] == 128
    assert out["rejected_again"] == [504] and out["rows_final"] == 128  # a replay: no copies
