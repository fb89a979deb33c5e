"""One event by id from the hot store: the audit path's read.

``events`` is ordered for analysts (tenant, type, time), so an id alone would scan it. The
``events_by_id`` table keeps each row as one JSON string ordered by event_id in small granules
and compression blocks, so a lookup is one primary-key read of one small block (a ``SELECT *``
by key on ``events`` itself reads a granule of each of its 33 column files: about 9x slower).
benchmarks/sinks.py measures it at 1M and 10M rows. No FINAL: copies of one event_id not yet
merged are the same signed event, and LIMIT 1 takes one.
"""

from __future__ import annotations

import json
from typing import Any

LOOKUP_SQL = "SELECT row FROM {db}.events_by_id WHERE event_id = {{event_id:String}} LIMIT 1"
# ClickHouse's JSON output quotes 64-bit integers; give them back their type.
INTEGER_FIELDS = ("seq", "source_offset", "kafka_offset")


def find_event(client: Any, database: str, event_id: str) -> dict[str, Any] | None:
    """The stored row of ``event_id`` (column -> value; times as 'YYYY-MM-DD hh:mm:ss.mmm' UTC),
    or None."""
    result = client.query(LOOKUP_SQL.format(db=database), parameters={"event_id": event_id})
    if not result.result_rows:
        return None
    row: dict[str, Any] = json.loads(result.result_rows[0][0])
    for name in INTEGER_FIELDS:
        if isinstance(row.get(name), str):
            row[name] = int(row[name])
    return row
