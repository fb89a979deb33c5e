"""Running a guarded query (sinks/clickhouse/query.py makes it safe): read-only, within the
endpoint's limits, and with the engine kept from moving a caller's conditions below the
tenant filter."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sealstream.settings import ClickHouseSettings


@dataclass(frozen=True)
class QueryLimits:
    """What one query may use besides rows and time (0 = no limit where ClickHouse allows)."""

    max_memory_bytes: int = 1024**3
    max_result_bytes: int = 512 * 1024**2
    max_rows_to_read: int = 0
    max_bytes_to_read: int = 0

    @classmethod
    def from_settings(cls, settings: ClickHouseSettings) -> QueryLimits:
        return cls(
            settings.query_max_memory_bytes,
            settings.query_max_result_bytes,
            settings.query_max_rows_to_read,
            settings.query_max_bytes_to_read,
        )


def query_settings(max_rows: int, timeout_s: int, limits: QueryLimits) -> dict[str, Any]:
    """ClickHouse settings for one guarded query; ``readonly`` last: it freezes the rest."""
    return {
        "max_result_rows": max_rows,
        "max_result_bytes": limits.max_result_bytes,
        "result_overflow_mode": "throw",
        "max_execution_time": timeout_s,
        "timeout_overflow_mode": "throw",
        "max_memory_usage": limits.max_memory_bytes,
        "max_rows_to_read": limits.max_rows_to_read,
        "max_bytes_to_read": limits.max_bytes_to_read,
        "read_overflow_mode": "throw",
        # and no predicate moved into a subquery (the scoped reads' LIMIT already stops it)
        "enable_optimize_predicate_expression": 0,
        "query_plan_filter_push_down": 0,
        "readonly": 1,
    }


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    elapsed_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "types": self.types,
            "rows": self.rows,
            "row_count": len(self.rows),
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


def run(
    client: Any, sql: str, max_rows: int, timeout_s: int, limits: QueryLimits | None = None
) -> QueryResult:
    """Run guarded SQL read-only, within ``limits`` (defaults: ``QueryLimits()``)."""
    started = time.perf_counter()
    result = client.query(
        sql, settings=query_settings(max_rows, timeout_s, limits or QueryLimits())
    )
    return QueryResult(
        list(result.column_names),
        [t.name for t in result.column_types],
        [list(r) for r in result.result_rows],
        (time.perf_counter() - started) * 1000,
    )
