"""Parts the embedded engine wrote broken while its storage failed: found, set aside, rebuilt.

Found by the fault suite (docs/faults.md): while the sink process could not write a byte
(RLIMIT_FSIZE 0), chDB committed parts whose files it had failed to write (empty or cut
short) as if they were whole: a background merge of ``events_minutely_state``, and the
rollup's own part of an insert whose ``events`` part was written just before the limit hit.
Every query that touches such a part fails (``Code: 246 ... Empty marks file``). ClickHouse
deals with it only when it loads the table: it moves the part to ``detached/`` (reason
``broken-on-start``) and makes the parts it was merged from active again, if they are still on
disk (``old_parts_lifetime``, 10 minutes by migration 4). A running engine keeps serving the
broken part. So:

1. After an outage the sink checks every part written since shortly before it
   (``CHECK TABLE ... PART``); if one is broken it stops with exit code 75
   (``sinks.runner.RESTART_TO_REPAIR``), and
   its supervisor starts it again (``recent_broken_parts``).
2. At start, before it consumes, the sink looks at each part set aside as broken: are its rows
   in the parts loaded with it (``rows_are_back``)? Rows of a table the sink fills from a topic
   are read back from Kafka and written again (``restore``, sinks/clickhouse/recover.py); a
   table a materialized view fills gets the partitions of its lost parts, and those the rows
   written again reach, recomputed from the view's query over its source; rows nothing can
   restore are reported as lost, with the way to restore them by hand (``repair_at_start``).

The engine starts merging as soon as it has loaded a table, so by the time the sink looks, a
merge may have joined the neighbours of a set-aside part into one whose block range spans it
(blocks 1-15 around a lost block 11) without holding its rows. Block ranges of parts created
after the set-aside prove nothing; only the parts inside the broken part's range, and parts
older than the set-aside that span it, do.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
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
    restored: list[str] = field(default_factory=list)  # "table part: how", rows written again

    def as_dict(self) -> dict[str, Any]:
        done = {"set_aside": self.set_aside, "rebuilt": self.rebuilt, "lost": self.lost}
        return {**done, "restored": self.restored} if self.restored else done


_TARGET = re.compile(r"\bTO\s+`?([\w.]+?)`?\.`?(\w+)`?\s", re.IGNORECASE)
_SOURCE = re.compile(r"\bFROM\s+`?(\w+)`?\.`?(\w+)`?", re.IGNORECASE)


@dataclass(frozen=True)
class View:
    """A materialized view of the database: the table it fills from which source table."""

    target: str
    source: str
    select: str
    partition_key: str  # the target's PARTITION BY ('' when it has none)
    counts: bool  # the target keeps every row it gets (not a Replacing engine): copies count


def views(client: Any, database: str) -> list[View]:
    """The materialized views of ``database`` whose target and source are in it."""
    tables = {
        str(name): (str(engine), str(key))
        for name, engine, key in client.query(
            "SELECT name, engine, partition_key FROM system.tables WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
    }
    found = []
    for query, select in client.query(
        "SELECT create_table_query, as_select FROM system.tables "
        "WHERE database = {db:String} AND engine = 'MaterializedView'",
        parameters={"db": database},
    ).result_rows:
        target, source = _TARGET.search(str(query)), _SOURCE.search(str(select))
        if not (target and target.group(1) == database and target.group(2) in tables):
            continue
        engine, key = tables[target.group(2)]
        found.append(
            View(
                target.group(2),
                source.group(2) if source and source.group(1) == database else "",
                str(select),
                key,
                not engine.startswith("Replacing"),
            )
        )
    return found


def view_targets(client: Any, database: str) -> dict[str, str]:
    """Tables that a materialized view of ``database`` fills -> the view's query."""
    return {view.target: view.select for view in views(client, database)}


def view_partitions(client: Any, database: str, view: View, where: str) -> set[str] | None:
    """The partitions of ``view.target`` that the view's query puts the source rows matching
    ``where`` (SQL over the source's columns) in; None if the query's source cannot be
    narrowed (then every partition may hold them)."""
    if not view.partition_key:
        return {"all"}
    narrowed, found = re.subn(
        rf"\bFROM\s+`?{database}`?\.`?{view.source}`?(?![\w`.])",
        f"FROM (SELECT * FROM `{database}`.`{view.source}` WHERE {where})",
        view.select,
        count=1,
    )
    if not view.source or found != 1:
        return None
    return {
        str(p)
        for (p,) in client.query(
            f"SELECT DISTINCT partitionId({view.partition_key}) FROM ({narrowed})"
        ).result_rows
    }


@dataclass(frozen=True)
class SetAside:
    """A part the engine moved to ``detached/`` as broken (``system.detached_parts``)."""

    table: str
    name: str
    partition: str
    low: int  # its block range
    high: int
    at: dt.datetime  # when it was set aside (the directory's modification time)
    path: str = ""  # its directory under detached/ (its files keep the times they were written)


def rows_are_back(client: Any, database: str, part: SetAside) -> bool:
    """Are the rows of a part set aside as broken in the parts the engine loaded?

    Yes if a part committed before the set-aside spans its blocks (one merged from it or from
    its sources), or if the parts inside its block range, active or merged away since, cover
    it (its sources, made active again). A part committed since may span the range without
    its rows: a merge of its neighbours, which the engine starts as soon as it has loaded."""
    parts = client.query(
        "SELECT min_block_number, max_block_number, modification_time FROM system.parts "
        "WHERE database = {db:String} AND table = {t:String} AND partition_id = {p:String} "
        "AND ((min_block_number >= {low:Int64} AND max_block_number <= {high:Int64}) "
        "OR (min_block_number <= {low:Int64} AND max_block_number >= {high:Int64}))",
        parameters={
            "db": database, "t": part.table, "p": part.partition, "low": part.low,
            "high": part.high,
        },
    ).result_rows  # fmt: skip
    if any(a <= part.low and b >= part.high and at < part.at for a, b, at in parts):
        return True
    inside = [(int(a), int(b)) for a, b, _ in parts if a >= part.low and b <= part.high]
    return covered((part.low, part.high), inside)


def _drop_detached(client: Any, database: str, part: SetAside) -> None:
    client.command(
        f"ALTER TABLE `{database}`.`{part.table}` DROP DETACHED PART '{part.name}' "
        "SETTINGS allow_drop_detached = 1"
    )


REBUILD_SUFFIX = "__rebuild"


def rebuild_partitions(
    client: Any, database: str, table: str, select: str, partitions: list[str]
) -> None:
    """Recompute ``partitions`` of a view's target from the view's query over its source.

    Computed into a staging copy of the table, then swapped in a partition at a time
    (``REPLACE PARTITION``, atomic): the other partitions keep what they counted, and the
    table keeps its memory of insert tokens, so a batch the sink writes again after the
    restart (a pending range) is not counted a second time (``TRUNCATE`` forgets them)."""
    target = f"`{database}`.`{table}`"
    staging = f"`{database}`.`{table}{REBUILD_SUFFIX}`"
    client.command(f"DROP TABLE IF EXISTS {staging}")
    client.command(f"CREATE TABLE {staging} AS {target}")
    try:
        # the staging copy must keep every block of the query, identical ones too
        client.command(
            f"ALTER TABLE {staging} MODIFY SETTING non_replicated_deduplication_window = 0"
        )
        client.command(f"INSERT INTO {staging} {select}")
        for partition in partitions:
            client.command(
                f"ALTER TABLE {target} REPLACE PARTITION ID '{partition}' FROM {staging}"
            )
    finally:
        client.command(f"DROP TABLE IF EXISTS {staging}")


@dataclass
class Restored:
    """What ``restore`` put back into source tables, for ``repair_at_start`` to finish."""

    tables: dict[str, str] = field(default_factory=dict)  # table -> how ("4 rows from Kafka")
    partitions: dict[str, set[str]] = field(default_factory=dict)  # view target -> recompute


# Called with the source tables whose set-aside parts nothing covers (table -> parts); puts
# back what it can and says which tables are whole again (sinks/clickhouse/recover.py).
Restore = Callable[[dict[str, list[SetAside]]], Restored]


def set_aside_parts(client: Any, database: str) -> list[SetAside]:
    """The parts the engine moved to ``detached/`` as broken."""
    return [
        SetAside(str(t), str(n), str(p), int(low), int(high), at, str(path))
        for t, n, p, low, high, at, path in client.query(
            "SELECT table, name, partition_id, min_block_number, max_block_number, "
            "modification_time, path FROM system.detached_parts "
            "WHERE database = {db:String} AND startsWith(reason, 'broken')",
            parameters={"db": database},
        ).result_rows
    ]


def repair_at_start(client: Any, database: str, restore: Restore | None = None) -> RepairReport:
    """Rebuild what the parts the engine set aside as broken took with them (see above).

    With ``restore``, the lost rows of the tables the sink fills are put back first, so that
    the views recomputed afterwards count them once."""
    report = RepairReport()
    detached = set_aside_parts(client, database)
    restored = Restored()
    if not detached:
        if restore is not None:  # a recovery an earlier start left unfinished, if any
            restored = restore({})
            _recompute(client, database, report, restored.partitions, {})
        return report
    report.set_aside = [f"{d.table} {d.name}" for d in detached]
    targets = view_targets(client, database)
    uncovered: dict[str, list[SetAside]] = {}
    for part in detached:
        if rows_are_back(client, database, part):
            log.info("broken part %s.%s set aside; its rows are in the parts loaded with it",
                     part.table, part.name)  # fmt: skip
            _drop_detached(client, database, part)  # nothing left to decide at the next start
            continue
        uncovered.setdefault(part.table, []).append(part)
    sources = {t: parts for t, parts in uncovered.items() if t not in targets}
    if restore is not None:
        restored = restore(sources)
    broken = {t: parts for t, parts in uncovered.items() if t in targets}
    _recompute(client, database, report, restored.partitions, broken)
    for table, parts in sorted(sources.items()):
        if table in restored.tables:
            for part in parts:  # done with: the next start must not restore again
                _drop_detached(client, database, part)
                report.restored.append(f"{table} {part.name}: {restored.tables[table]}")
            log.warning("rows of %s.%s that broken part(s) %s took are back: %s", database,
                        table, [p.name for p in parts], restored.tables[table])  # fmt: skip
            continue
        for part in parts:
            report.lost.append(f"{table} {part.name} (blocks {part.low}..{part.high})")
            log.error(
                "rows of %s.%s are missing from the hot store: the engine set the broken part "
                "%s aside and the parts it was merged from are gone%s. For events, restore "
                "them from the cold files with `sealstream replay cold`; then drop the part "
                "(ALTER TABLE ... DROP DETACHED PART '%s' SETTINGS allow_drop_detached = 1)",
                database,
                table,
                part.name,
                "" if restore is None else ", and Kafka did not give them back",
                part.name,
            )
    return report


def _recompute(
    client: Any,
    database: str,
    report: RepairReport,
    restored: dict[str, set[str]],
    broken: dict[str, list[SetAside]],
) -> None:
    """Recompute the view targets' partitions that broken parts took, and those that rows
    written again reached, from the views' queries."""
    targets = view_targets(client, database)
    for table in sorted(t for t in set(restored) | set(broken) if restored.get(t) or broken.get(t)):
        parts = broken.get(table, [])
        partitions = sorted({p.partition for p in parts} | restored.get(table, set()))
        rebuild_partitions(client, database, table, targets[table], partitions)
        for part in parts:  # done with: the next start must not rebuild again
            _drop_detached(client, database, part)
        if parts:
            log.warning("%s partitions %s rebuilt from its source: broken part(s) %s had no "
                        "sources left", table, partitions, [p.name for p in parts])  # fmt: skip
        else:
            log.warning("%s partitions %s recomputed from its source: rows written again "
                        "after an outage reached them", table, partitions)  # fmt: skip
        report.rebuilt.append(table)
