"""``verify`` with a filter selects the same entries from both stores (docs/faults.md): events
that occurred days before they arrived, stored hot in the embedded engine and cold in files,
read back with every filter, directly and through the analyst query path's operator scope.

The engine belongs to one process per data directory, so the store work runs in a child."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = """
import datetime as dt, json, sys
from schemas.samples import signed_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import ClickHouseSettings, ObjectStoreSettings, SinkSettings
from sinks.clickhouse.access import direct_reader
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
from sinks.clickhouse.query import guard, operator
from sinks.clickhouse.running import run
from sinks.clickhouse.sink import ClickHouseStore
from sinks.objects.reader import Selection
from sinks.objects.sink import ColdStore
from sinks.objects.store import ObjectStore
from sinks.verify import VerifyReport, cold_entries, hot_entries, read_hot, verify
from tests.unit.test_sinks_parts import batch_of, codec

root = sys.argv[1]
KEYS = HmacKeyring("k1", {"k1": b"k" * 32})
DAY = 86_400_000
now = dt.datetime.now(dt.UTC)
arrival = int(now.replace(hour=12, minute=0, second=0, microsecond=0).timestamp() * 1000)
# late arrivals: occurred 8 days, 1 day and no time before they arrived (today at noon)
records = signed_chain(30, "events.raw/0", KEYS, start_ms=arrival, ages_ms=(8 * DAY, DAY, 0))
settings = ClickHouseSettings(embedded_dir=root + "/ch")
client = connect(settings)
migrate(client, settings)
db = settings.database
_, decoder = codec()
ClickHouseStore(client, settings, SinkSettings(), decoder, "g", {}).write(batch_of(records))
objects = ObjectStoreSettings(url=root + "/objects", prefix="events")
ColdStore(ObjectStore(objects), objects, decoder).write(batch_of(records))

direct = direct_reader(client, db)
def guarded(sql):  # what the sink's endpoint runs for an auditor
    result = run(client, guard(sql.replace("{db}.", ""), operator(), db), 100_000, 60)
    return [dict(zip(result.columns, row)) for row in result.rows]

today = now.date()
selections = {
    "since yesterday": Selection(since=today - dt.timedelta(days=1)),
    "until 8 days ago": Selection(until=today - dt.timedelta(days=8)),
    "one day": Selection(since=today - dt.timedelta(days=1), until=today - dt.timedelta(days=1)),
    "tenant": Selection(tenant="acme", since=today - dt.timedelta(days=8)),
    "everything": Selection(),
}
out = {}
for name, selection in selections.items():
    report = VerifyReport()
    cold = cold_entries(ObjectStore(objects), "events", selection, report)
    hot = hot_entries(read_hot(direct, selection))
    via_endpoint = hot_entries(read_hot(guarded, selection))
    verify(hot, cold, KEYS, {}, selection == Selection(), report)
    out[name] = {
        "hot": sorted(e.record["event_id"] for e in hot),
        "endpoint": sorted(e.record["event_id"] for e in via_endpoint),
        "cold": sorted(e.record["event_id"] for e in cold),
        "drift": report.drift,
        "findings": [f.as_dict() for f in report.findings],
    }
out["expected"] = {
    "since yesterday": sorted(r["event_id"] for i, r in enumerate(records) if i % 3),
    "until 8 days ago": sorted(r["event_id"] for i, r in enumerate(records) if i % 3 == 0),
    "one day": sorted(r["event_id"] for i, r in enumerate(records) if i % 3 == 1),
    "tenant": sorted(r["event_id"] for r in records if r["tenant"] == "acme"),
    "everything": sorted(r["event_id"] for r in records),
}
print(json.dumps(out))
"""


def test_both_stores_select_the_same_late_arriving_events_for_every_filter(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    expected = out.pop("expected")
    for name, got in out.items():
        assert got["cold"] == expected[name], name
        assert got["hot"] == expected[name], f"{name}: the hot store selected other events"
        assert got["endpoint"] == expected[name], f"{name}: through the endpoint"
        assert got["drift"] == [], name
        assert got["findings"] == [], name
