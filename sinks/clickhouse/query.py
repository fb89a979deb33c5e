"""The analyst query path: read-only SQL, scoped to one tenant, deduplicated, audited.

A query is parsed with sqlglot (ClickHouse dialect) and accepted only if it is one SELECT
(UNION and WITH allowed) over the analyst tables, with no table functions, no file/network
functions and no SETTINGS/FORMAT clause. Each table reference is then replaced by a subquery
that reads it ``FINAL`` (so an event_id stored twice shows once) and, for a tenant-scoped
caller, only that tenant's rows. The rewritten SQL runs with ``readonly=1``.

Parsing is the guard because the embedded engine has no users or row policies; with a
ClickHouse server, give the sink's query user a read-only profile as well (docs/sinks.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

# table -> has a tenant column (analysts see only tables that have one)
ANALYST_TABLES = {
    "events": True,
    "events_minutely": True,
    "dead_letters": True,
    "dead_letters_minutely": True,
    "audit_decisions": True,
}
OPERATOR_TABLES = {
    **ANALYST_TABLES,
    "events_by_id": True,
    "receipts": True,
    "checkpoints": False,
    "schema_migrations": False,
}
# ReplacingMergeTree tables read FINAL; views and plain MergeTree tables cannot or need not be.
FINAL_TABLES = {"events", "events_by_id", "receipts", "checkpoints", "schema_migrations"}
# Scalar functions that reach outside the database.
FORBIDDEN_FUNCTIONS = {
    "file", "url", "s3", "s3cluster", "hdfs", "remote", "remotesecure", "cluster", "mysql",
    "postgresql", "jdbc", "odbc", "executable", "input", "azureblobstorage", "gcs", "sqlite",
    "mongodb", "redis", "dictget", "getsetting", "filesystemavailable", "currentuser",
}  # fmt: skip


class QueryRejected(ValueError):
    """A query the analyst path does not run; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Scope:
    """Who is asking: ``tenant`` None means every tenant (local operators, auditors)."""

    tenant: str | None
    tables: dict[str, bool]
    final: bool = True  # read ReplacingMergeTree tables deduplicated


def analyst(tenant: str) -> Scope:
    return Scope(tenant, ANALYST_TABLES)


def operator() -> Scope:
    """Auditors and local operators: every tenant, tables as stored (duplicates included, so
    that verification sees what is physically there)."""
    return Scope(None, OPERATOR_TABLES, final=False)


def _function_name(node: Any) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return str(node.sql_name()).lower()
    return ""


def guard(sql: str, scope: Scope, database: str) -> str:
    """The SQL to run for ``sql``, or QueryRejected saying why not."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise QueryRejected("query_empty", "the query is empty")
    try:
        statements = [s for s in sqlglot.parse(text, dialect="clickhouse") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise QueryRejected("query_syntax", f"cannot parse the query: {exc}") from exc
    if len(statements) != 1:
        raise QueryRejected("query_multiple", "send exactly one statement")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise QueryRejected(
            "query_not_read_only", f"only SELECT queries run here, not {tree.key.upper()}"
        )
    for node in tree.walk():
        if isinstance(node, exp.Query) and (node.args.get("settings") or node.args.get("format")):
            raise QueryRejected(
                "query_clause_forbidden", "SETTINGS and FORMAT clauses are not allowed"
            )
        if isinstance(node, exp.Func) and _function_name(node) in FORBIDDEN_FUNCTIONS:
            raise QueryRejected(
                "query_function_forbidden", f"function {_function_name(node)}() is not allowed"
            )
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables = list(tree.find_all(exp.Table))
    for table in tables:
        if not isinstance(table.this, exp.Identifier):
            raise QueryRejected(
                "query_table_function",
                f"table functions are not allowed: {table.sql('clickhouse')}",
            )
        name, db = table.name, table.db
        if not db and name in ctes:
            continue
        if (db and db != database) or name not in scope.tables:
            allowed = ", ".join(sorted(scope.tables))
            raise QueryRejected(
                "query_table_forbidden", f"table {table.sql('clickhouse')} is not one of: {allowed}"
            )
        scoped = f"SELECT * FROM {database}.{name}"
        if scope.final and name in FINAL_TABLES:
            scoped += " FINAL"
        if scope.tenant is not None and scope.tables[name]:
            scoped += f" WHERE tenant = {exp.Literal.string(scope.tenant).sql('clickhouse')}"
        alias = table.alias or name
        replacement = exp.Subquery(
            this=sqlglot.parse_one(scoped, dialect="clickhouse"),
            alias=exp.TableAlias(this=exp.to_identifier(alias)),
        )
        table.replace(replacement)
    return tree.sql(dialect="clickhouse")


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


def run(client: Any, sql: str, max_rows: int, timeout_s: int) -> QueryResult:
    """Run guarded SQL read-only (``readonly`` last: it freezes the settings after it)."""
    started = time.perf_counter()
    result = client.query(
        sql,
        settings={
            "max_result_rows": max_rows,
            "result_overflow_mode": "throw",
            "max_execution_time": timeout_s,
            "readonly": 1,
        },
    )
    return QueryResult(
        list(result.column_names),
        [t.name for t in result.column_types],
        [list(r) for r in result.result_rows],
        (time.perf_counter() - started) * 1000,
    )
