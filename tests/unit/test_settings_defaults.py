"""Every piece of local state lives under the stack directory by default, so `make run` leaves
one directory behind and `sealstream stack down` plus removing it starts afresh (a move of the
operator layer once sent the embedded engine's default to `.ops/clickhouse`)."""

from __future__ import annotations

from pathlib import Path

from sealstream.settings import (
    ClickHouseSettings,
    KeySettings,
    ObjectStoreSettings,
    StackSettings,
    WorkerSettings,
)


def test_default_state_paths_are_under_the_default_stack_directory() -> None:
    stack = StackSettings().dir
    paths = {
        "keys": KeySettings().dir,
        "hot store": ClickHouseSettings().embedded_dir,
        "audit index": ClickHouseSettings().audit_index_path,
        "cold store": Path(ObjectStoreSettings().url),
        "worker data": WorkerSettings().data_dir,
    }
    outside = {
        name: path for name, path in paths.items() if path is None or stack not in path.parents
    }
    assert outside == {}
