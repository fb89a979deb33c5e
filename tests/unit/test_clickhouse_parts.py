"""Broken parts of the embedded engine (sinks/clickhouse/parts.py): found while it runs, set
aside by a fresh start, and what they took rebuilt or reported. The engine belongs to one
process per data directory, so each step runs in a process of its own, as the sink's restart
does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sinks.clickhouse.parts import covered

SETUP = """
import glob, json, sys, clickhouse_connect
from sinks.clickhouse.parts import recent_broken_parts
c = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
c.command("CREATE DATABASE d")
c.command("CREATE TABLE d.e (at DateTime('UTC'), tenant String) ENGINE = MergeTree "
          "PARTITION BY toYYYYMM(at) ORDER BY (tenant, at)")
c.command("CREATE TABLE d.s (minute DateTime('UTC'), tenant String, n AggregateFunction(count)) "
          "ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(minute) ORDER BY (tenant, minute)")
c.command("CREATE MATERIALIZED VIEW d.mv TO d.s AS SELECT toStartOfMinute(at) AS minute, "
          "tenant, countState() AS n FROM d.e GROUP BY minute, tenant")
c.command("SYSTEM STOP MERGES")
for i in range(3):
    c.command(f"INSERT INTO d.e SELECT toDateTime('2026-11-30 12:00:00', 'UTC') - {i} * 60, "
              f"'acme' FROM numbers({10 * (i + 1)})")
if sys.argv[2] == "merged":  # the sources stay on disk (old_parts_lifetime)
    c.command("SYSTEM START MERGES")
    c.command("OPTIMIZE TABLE d.s FINAL")
def part(table, which):  # the oldest, middle or newest active part
    names = [n for (n,) in c.query("SELECT name FROM system.parts WHERE database = 'd' "
                                   f"AND active AND table = '{table}' ORDER BY max_block_number"
                                   ).result_rows]
    return names[{"oldest": 0, "middle": len(names) // 2, "newest": -1}[which]]
broken = {t: part(t, w) for t, w in (x.split(":") for x in sys.argv[3].split(","))}
for table, part in broken.items():  # what chDB committed in the fault suite: empty marks
    for marks in glob.glob(f"{sys.argv[1]}/data/d/{table}/{part}/*mrk*"):
        open(marks, "w").close()
found = recent_broken_parts(c, "d", 0)
print(json.dumps({"broken": broken, "found": [[b.table, b.part] for b in found]}))
"""

RESTART = """
import json, sys, clickhouse_connect
from sinks.clickhouse.parts import repair_at_start
c = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
if sys.argv[2:] == ["merge-first"]:  # the engine merges as soon as it has loaded the tables
    for table in ("e", "s"):
        c.command(f"OPTIMIZE TABLE d.{table} FINAL")
first = repair_at_start(c, "d")
again = repair_at_start(c, "d")
count = c.query("SELECT countMerge(n) FROM d.s").result_rows[0][0]
source = c.query("SELECT count() FROM d.e").result_rows[0][0]
print(json.dumps({"first": first.as_dict(), "again": again.as_dict(), "rollup": count,
                  "source": source}))
"""


def run(script: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_covered_needs_the_whole_block_range() -> None:
    assert covered((1, 5), [(1, 1), (2, 3), (4, 5)])
    assert covered((2, 3), [(1, 4)])
    assert not covered((1, 5), [(1, 1), (3, 5)])  # block 2 is gone
    assert not covered((1, 5), [(1, 4)])
    assert not covered((1, 1), [])


def test_a_broken_rollup_part_without_sources_is_rebuilt_and_lost_rows_are_named(
    tmp_path: Path,
) -> None:
    """Merges off: the broken parts were written by inserts (10, 20 and 30 rows), nothing
    covers them. The running engine's check finds both; after a fresh start the rollup (a
    view's target) is rebuilt from its source, and the source table's missing rows are
    reported, not hidden."""
    setup = run(SETUP, str(tmp_path), "inserts", "s:newest,e:oldest")
    assert sorted(map(tuple, setup["found"])) == sorted(setup["broken"].items())
    after = run(RESTART, str(tmp_path))
    assert len(after["first"]["set_aside"]) == 2
    assert after["first"]["rebuilt"] == ["s"]
    assert [line.split()[0] for line in after["first"]["lost"]] == ["e"]
    # the rollup is the view over what the source still has (20 + 30); left alone it would
    # have counted what its own parts still had (10 + 20)
    assert after["rollup"] == 50
    # done once: the rebuilt table's broken part was dropped, the lost one is still named
    assert after["again"]["rebuilt"] == [] and len(after["again"]["lost"]) == 1


def test_a_broken_merged_part_whose_sources_are_back_needs_no_rebuild(tmp_path: Path) -> None:
    setup = run(SETUP, str(tmp_path), "merged", "s:newest")
    assert [tuple(x) for x in setup["found"]] == list(setup["broken"].items())
    after = run(RESTART, str(tmp_path))
    assert after["first"] == {
        "set_aside": [f"s broken-on-start_{setup['broken']['s']}"],
        "rebuilt": [],
        "lost": [],
    }
    assert after["rollup"] == 60


def test_a_merge_of_its_neighbours_at_start_does_not_pass_for_a_broken_parts_rows(
    tmp_path: Path,
) -> None:
    """The CI run's interleaving (docs/faults.md): the middle insert part of the rollup and of
    the source broken, and the restarted engine merges the parts on either side of each before
    the repair looks. The merged parts' block ranges (1..3) span the set-aside ones (2..2)
    without their rows: the rollup is rebuilt all the same, and the source's rows are reported
    lost, not taken for back."""
    setup = run(SETUP, str(tmp_path), "inserts", "s:middle,e:middle")
    assert sorted(map(tuple, setup["found"])) == sorted(setup["broken"].items())
    after = run(RESTART, str(tmp_path), "merge-first")
    assert after["first"]["rebuilt"] == ["s"]
    assert [line.split()[:2] for line in after["first"]["lost"]] == [
        ["e", f"broken-on-start_{setup['broken']['e']}"]
    ]
    assert after["source"] == 40  # 10 + 30: the 20 of the middle insert are gone
    assert after["rollup"] == 40  # the view over what the source has
    assert after["again"]["rebuilt"] == [] and len(after["again"]["lost"]) == 1


def test_sources_back_and_merged_again_at_start_still_count_as_back(tmp_path: Path) -> None:
    """A broken merged part whose sources came back, and which the engine merged again right
    after loading them: nothing is missing, nothing rebuilt, and the set-aside part is dropped
    so that a later start (the sources deleted by then) does not take it for lost."""
    setup = run(SETUP, str(tmp_path), "merged", "s:newest")
    after = run(RESTART, str(tmp_path), "merge-first")
    assert after["first"] == {
        "set_aside": [f"s broken-on-start_{setup['broken']['s']}"],
        "rebuilt": [],
        "lost": [],
    }
    assert after["again"] == {"set_aside": [], "rebuilt": [], "lost": []}
    assert after["rollup"] == after["source"] == 60
