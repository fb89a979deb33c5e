"""Parts the embedded engine wrote broken while its storage failed: found, set aside, rebuilt.

Found by the fault suite (docs/faults.md): while the sink process could not write a byte
(RLIMIT_FSIZE 0), a background merge of ``events_minutely_state`` committed a part with an
empty marks file, and every query that touched it failed (``Code: 246 ... Empty marks file``).
ClickHouse deals with such a part only when it loads the table: it moves the part to
``detached/`` (reason ``broken-on-start``) and makes the parts it was merged from active
again, if they are still on disk (``old_parts_lifetime``, 8 minutes). A running engine keeps
serving the broken part. So:

1. After an outage the sink checks every part written since shortly before it
   (``CHECK TABLE ... PART``); if one is broken it stops with exit code 75
   (``sinks.runner.RESTART_TO_REPAIR``), and
   its supervisor starts it again (``recent_broken_parts``).
2. At start, before it consumes, the sink looks at the parts set aside as broken that no
   active part covers (their merge sources were gone, so their rows are missing): a table a
   materialized view fills is rebuilt from the view's query over its source; rows of any other
   table are reported as lost, with the way to restore them (``repair_at_start``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sealstream.sink.clickhouse")

# a merge that was already running when the first write failed also wrote during the outage
MERGE_MARGIN_S = 300.0


@dataclass(frozen=True)
class BrokenPart:
    table: str
    part: str
    message: str


def recent_broken_parts(client: Any, database: str, since: float) -> list[BrokenPart]:
    """Active parts of ``database`` modified at or after ``since`` (epoch seconds) that fail
    their check."""
    rows = client.query(
        "SELECT table, name FROM system.parts WHERE database = {db:String} AND active "
        "AND modification_time >= toDateTime({since:UInt32}) ORDER BY table, name",
        parameters={"db": database, "since": int(since)},
    ).result_rows
    broken = []
    for table, part in rows:
        checked = client.query(
            f"CHECK TABLE `{database}`.`{table}` PART '{part}' "
            "SETTINGS check_query_single_value_result = 0"
        ).result_rows
        for _path, passed, message in checked:
            if str(passed) != "1":
                broken.append(BrokenPart(str(table), str(part), str(message)))
    return broken


def covered(block_range: tuple[int, int], active: list[tuple[int, int]]) -> bool:
    """Do the active parts' block ranges together cover ``block_range``? (Then the parts a
    broken merge was made from are back, and nothing is missing.)"""
    low, high = block_range
    reach = low - 1
    for first, last in sorted(active):
        if first > reach + 1:
            break
        reach = max(reach, last)
        if reach >= high:
            return True
    return False


@dataclass
class RepairReport:
    rebuilt: list[str] = field(default_factory=list)  # tables rebuilt from their view's source
    lost: list[str] = field(default_factory=list)  # "table part (blocks a..b)", rows missing
    set_aside: list[str] = field(default_factory=list)  # "table part": detached as broken

    def as_dict(self) -> dict[str, Any]:
        return {"set_aside": self.set_aside, "rebuilt": self.rebuilt, "lost": self.lost}


_TARGET = re.compile(r"\bTO\s+`?([\w.]+?)`?\.`?(\w+)`?\s", re.IGNORECASE)


def view_targets(client: Any, database: str) -> dict[str, str]:
    """Tables that a materialized view of ``database`` fills -> the view's query."""
    targets = {}
    for query, select in client.query(
        "SELECT create_table_query, as_select FROM system.tables "
        "WHERE database = {db:String} AND engine = 'MaterializedView'",
        parameters={"db": database},
    ).result_rows:
        match = _TARGET.search(str(query))
        if match and match.group(1) == database:
            targets[match.group(2)] = str(select)
    return targets


def repair_at_start(client: Any, database: str) -> RepairReport:
    """Rebuild what the parts the engine set aside as broken took with them (see above)."""
    report = RepairReport()
    detached = client.query(
        "SELECT table, name, partition_id, min_block_number, max_block_number "
        "FROM system.detached_parts WHERE database = {db:String} AND startsWith(reason, 'broken')",
        parameters={"db": database},
    ).result_rows
    if not detached:
        return report
    report.set_aside = [f"{t} {n}" for t, n, *_ in detached]
    targets = view_targets(client, database)
    uncovered: dict[str, list[tuple[str, int, int]]] = {}
    for table, name, partition, low, high in detached:
        active = client.query(
            "SELECT min_block_number, max_block_number FROM system.parts WHERE active "
            "AND database = {db:String} AND table = {t:String} AND partition_id = {p:String}",
            parameters={"db": database, "t": table, "p": partition},
        ).result_rows
        if covered((int(low), int(high)), [(int(a), int(b)) for a, b in active]):
            log.info(
                "broken part %s.%s set aside; the parts it was merged from are back", table, name
            )
            continue
        uncovered.setdefault(str(table), []).append((str(name), int(low), int(high)))
    for table, parts in sorted(uncovered.items()):
        if table in targets:
            # derived rows: recompute the whole table from the source, as the view would
            client.command(f"TRUNCATE TABLE `{database}`.`{table}`")
            client.command(f"INSERT INTO `{database}`.`{table}` {targets[table]}")
            for name, _, _ in parts:  # done with: the next start must not rebuild again
                client.command(
                    f"ALTER TABLE `{database}`.`{table}` DROP DETACHED PART '{name}' "
                    "SETTINGS allow_drop_detached = 1"
                )
            log.warning("%s rebuilt from its source: broken part(s) %s had no sources left",
                        table, [n for n, _, _ in parts])  # fmt: skip
            report.rebuilt.append(table)
            continue
        for name, low, high in parts:
            report.lost.append(f"{table} {name} (blocks {low}..{high})")
            log.error(
                "rows of %s.%s are missing from the hot store: the engine set the broken part "
                "%s aside and the parts it was merged from are gone. For events, restore them "
                "from the cold files with `sealstream replay cold`; then drop the part "
                "(ALTER TABLE ... DROP DETACHED PART '%s' SETTINGS allow_drop_detached = 1)",
                database,
                table,
                name,
                name,
            )
    return report
