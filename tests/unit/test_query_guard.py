"""The analyst query path cannot be escaped (sinks/clickhouse/query.py, endpoint.py).

A bypass corpus: every query is either refused with its exact code, or it runs on a real
embedded engine holding two tenants' rows (and operator-only tables full of secrets) and
returns acme's rows only, exactly as many as acme has. The engine belongs to one process per
data directory, so the engine work runs in a child, once for the whole module; the same child
checks the function allow-list against the engine's own catalogue and runs the project's own
queries through the guard. The endpoint tests use fakes: the role and the scope, concurrency
(forced with events, not timing), 429, the streaming body limit, and JSON for every failure.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlglot
from clickhouse_connect.driver.exceptions import DatabaseError
from sqlglot import TokenType

from sealstream.auth import AuthenticationError, Principal
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.endpoint import MAX_SQL_BYTES, create_query_app
from sinks.clickhouse.functions import (
    AGGREGATES,
    ALLOWED_FUNCTIONS,
    SERVER_STATE_FUNCTIONS,
    function_allowed,
)
from sinks.clickhouse.query import (
    ANALYST_TABLES,
    TYPE_TOKENS,
    QueryRejected,
    analyst,
    guard,
    operator,
)
from sinks.clickhouse.running import QueryLimits, query_settings, run

ROOT = Path(__file__).resolve().parents[2]
DB = "sealstream"

# -- refused, with the exact code -----------------------------------------------------------

REFUSED: list[tuple[str, str]] = [
    # statements
    ("", "query_empty"),
    ("  ;  ; ", "query_empty"),
    ("-- only a comment", "query_empty"),
    ("SELEC 1 FROM", "query_syntax"),
    ("SELECT 1; SELECT 2", "query_multiple"),
    ("SELECT 1; DROP TABLE events", "query_multiple"),
    ("SELECT 1 /* ; */; /* a comment hides nothing */ DROP TABLE events", "query_multiple"),
    ("SELECT 1 -- ends the line\n; SELECT * FROM receipts", "query_multiple"),
    ("SELECT ';'; SELECT 2", "query_multiple"),
    ("DROP TABLE events", "query_not_read_only"),
    ("/* c */ DROP TABLE events", "query_not_read_only"),
    ("-- c\nTRUNCATE TABLE events", "query_not_read_only"),
    ("INSERT INTO events (event_id) VALUES ('x')", "query_not_read_only"),
    ("WITH x AS (SELECT 1) INSERT INTO events SELECT * FROM x", "query_not_read_only"),
    ("ALTER TABLE events DELETE WHERE 1", "query_not_read_only"),
    ("CREATE TABLE x (a Int8) ENGINE = Memory", "query_not_read_only"),
    ("DELETE FROM events WHERE 1", "query_not_read_only"),
    ("OPTIMIZE TABLE events FINAL", "query_not_read_only"),
    ("SYSTEM FLUSH LOGS", "query_not_read_only"),
    ("KILL QUERY WHERE 1", "query_not_read_only"),
    ("SET readonly = 0", "query_not_read_only"),
    ("USE system", "query_not_read_only"),
    ("SHOW TABLES", "query_not_read_only"),
    ("SHOW GRANTS", "query_not_read_only"),
    ("DESCRIBE events", "query_not_read_only"),
    ("EXPLAIN SELECT * FROM receipts", "query_not_read_only"),
    ("EXISTS TABLE receipts", "query_not_read_only"),
    ("GRANT ALL ON *.* TO default", "query_not_read_only"),
    # clauses
    ("SELECT 1 SETTINGS readonly = 0", "query_clause_forbidden"),
    ("SELECT * FROM events FORMAT CSV", "query_clause_forbidden"),
    ("SELECT * FROM (SELECT * FROM events SETTINGS max_threads = 64)", "query_clause_forbidden"),
    ("SELECT 1 UNION ALL SELECT 2 SETTINGS max_memory_usage = 0", "query_clause_forbidden"),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", "query_clause_forbidden"),
    ("SELECT 1 INTO OUTFILE '/tmp/x' FORMAT CSV", "query_clause_forbidden"),
    ("WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t) SELECT * FROM t",
     "query_clause_forbidden"),
    ("SELECT * FROM events SAMPLE 0.1", "query_clause_forbidden"),
    ("SELECT {tenant:String}", "query_syntax"),
    ("SELECT 1 AS \x00", "query_syntax"),
    ("SELECT 1\x00; DROP TABLE events", "query_syntax"),
    ("SELECT @@version", "query_syntax"),
    ("SELECT 1 FROM events WHERE event_id = ANY (SELECT event_id FROM events)", "query_syntax"),
    ("SELECT in(event_id, receipts) FROM events", "query_syntax"),
    # table functions, anywhere
    ("SELECT * FROM numbers(10)", "query_table_function"),
    ("SELECT * FROM numbers_mt(1000000000000)", "query_table_function"),
    ("SELECT * FROM view(SELECT * FROM receipts)", "query_table_function"),
    ("SELECT * FROM merge('sealstream', '^rec')", "query_table_function"),
    ("SELECT * FROM values('a String', 'x')", "query_table_function"),
    ("SELECT * FROM dictionary('tenants')", "query_table_function"),
    ("SELECT * FROM generateRandom('a String')", "query_table_function"),
    ("SELECT * FROM loop(events)", "query_table_function"),
    ("SELECT * FROM events JOIN numbers(10) AS n ON 1 = 1", "query_table_function"),
    ("SELECT * FROM events WHERE event_id IN (SELECT toString(number) FROM numbers(9))",
     "query_table_function"),
    ("SELECT (SELECT count() FROM numbers(1000000000))", "query_table_function"),
    ("SELECT * FROM url('http://x/y', CSV)", "query_function_forbidden"),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "query_function_forbidden"),
    ("SELECT * FROM remote('127.0.0.1', sealstream.receipts)", "query_function_forbidden"),
    ("SELECT * FROM s3('http://x/y.csv')", "query_function_forbidden"),
    ("SELECT * FROM executable('id', 'LineAsString')", "query_function_forbidden"),
    ("SELECT * FROM cluster('default', system.one)", "query_function_forbidden"),
    ("SELECT * FROM mysql('h:3306', 'd', 't', 'u', 'p')", "query_function_forbidden"),
    ("SELECT * FROM input('a String')", "query_function_forbidden"),
    # tables and databases
    ("SELECT * FROM system.tables", "query_table_forbidden"),
    ("SELECT * FROM `system`.`users`", "query_table_forbidden"),
    ('SELECT * FROM "system"."one"', "query_table_forbidden"),
    ("SELECT * FROM SYSTEM.tables", "query_table_forbidden"),
    ("SELECT * FROM information_schema.tables", "query_table_forbidden"),
    ("SELECT * FROM INFORMATION_SCHEMA.TABLES", "query_table_forbidden"),
    ("SELECT * FROM default.events", "query_table_forbidden"),
    ("SELECT * FROM other.events", "query_table_forbidden"),
    ("SELECT * FROM SEALSTREAM.events", "query_table_forbidden"),
    ("SELECT * FROM `Sealstream`.events", "query_table_forbidden"),
    ("SELECT * FROM sealstream.sealstream.events", "query_table_forbidden"),
    ("SELECT * FROM Events", "query_table_forbidden"),
    ('SELECT * FROM "EVENTS"', "query_table_forbidden"),
    ("SELECT * FROM receipts", "query_table_forbidden"),
    ("SELECT * FROM sealstream.receipts", "query_table_forbidden"),
    ("SELECT * FROM events_by_id", "query_table_forbidden"),
    ("SELECT * FROM checkpoints", "query_table_forbidden"),
    ("SELECT * FROM schema_migrations", "query_table_forbidden"),
    ("SELECT * FROM dlq_replays", "query_table_forbidden"),
    ("SELECT * FROM events_minutely_state", "query_table_forbidden"),
    # names that are not the CTEs they look like
    ("WITH 1 AS receipts SELECT * FROM receipts", "query_table_forbidden"),
    ("WITH (SELECT 1) AS receipts SELECT * FROM receipts", "query_table_forbidden"),
    ("WITH receipts AS (SELECT * FROM receipts) SELECT * FROM receipts", "query_table_forbidden"),
    ("SELECT * FROM (WITH receipts AS (SELECT 1) SELECT * FROM receipts) AS q, receipts",
     "query_table_forbidden"),
    ("SELECT * FROM events WHERE event_id IN "
     "(SELECT * FROM (WITH receipts AS (SELECT '' AS event_id) SELECT * FROM receipts)) "
     "AND event_id IN (SELECT event_id FROM receipts)", "query_table_forbidden"),
    ("WITH a AS (SELECT * FROM receipts_cte), receipts_cte AS (SELECT 1) SELECT * FROM a",
     "query_table_forbidden"),
    ("WITH x AS (SELECT 1) SELECT * FROM (WITH y AS (SELECT * FROM x) SELECT * FROM y), y",
     "query_table_forbidden"),
    ("SELECT * FROM events AS x, x", "query_table_forbidden"),
    ("SELECT * FROM dead_letters AS receipts, receipts", "query_table_forbidden"),
    # subqueries in every clause
    ("SELECT (SELECT count() FROM receipts)", "query_table_forbidden"),
    ("SELECT * FROM events WHERE event_id IN (SELECT event_id FROM receipts)",
     "query_table_forbidden"),
    ("SELECT * FROM events WHERE event_id IN (SELECT name FROM system.users)",
     "query_table_forbidden"),
    ("SELECT tenant FROM events GROUP BY tenant HAVING count() > (SELECT count() FROM receipts)",
     "query_table_forbidden"),
    ("SELECT * FROM events WHERE EXISTS (SELECT 1 FROM events_by_id)", "query_table_forbidden"),
    ("SELECT * FROM events ORDER BY (SELECT count() FROM checkpoints)", "query_table_forbidden"),
    ("SELECT * FROM events ARRAY JOIN (SELECT groupArray(event_id) FROM receipts) AS r",
     "query_unresolved"),  # sqlglot reads this FROM receipts as a column: refused all the same
    ("SELECT * FROM events ARRAY JOIN (SELECT groupArray(event_id) FROM events) AS r",
     "query_unresolved"),
    ("SELECT has((SELECT groupArray(event_id) FROM events_by_id), 'x')", "query_table_forbidden"),
    ("SELECT 1 UNION ALL SELECT count() FROM receipts", "query_table_forbidden"),
    ("SELECT tenant FROM events INTERSECT SELECT tenant FROM receipts", "query_table_forbidden"),
    ("SELECT tenant FROM events EXCEPT SELECT tenant FROM events_by_id", "query_table_forbidden"),
    ("SELECT * FROM events LEFT JOIN receipts USING (event_id)", "query_table_forbidden"),
    ("SELECT * FROM events, sealstream.events_by_id", "query_table_forbidden"),
    # x IN name reads the table name in ClickHouse
    ("SELECT count() FROM events WHERE event_id IN receipts", "query_unresolved"),
    ("SELECT count() FROM events WHERE event_id IN (receipts)", "query_unresolved"),
    ("SELECT count() FROM events WHERE event_id IN ((receipts))", "query_unresolved"),
    ("SELECT count() FROM events WHERE event_id IN (receipts AS r)", "query_syntax"),
    ("SELECT count() FROM events WHERE event_id IN (sealstream.receipts)", "query_unresolved"),
    ("SELECT count() FROM events WHERE event_id NOT IN events_by_id", "query_unresolved"),
    ("SELECT count() FROM events WHERE event_id GLOBAL IN receipts", "query_unresolved"),
    ("WITH x AS (SELECT event_id FROM events) SELECT 1 FROM events WHERE event_id IN x",
     "query_unresolved"),
    # functions: server state, settings, files, network, dictionaries, other tables, sleep
    ("SELECT file('/etc/passwd')", "query_function_forbidden"),
    ("SELECT getServerSetting('path')", "query_function_forbidden"),
    ("SELECT getSettingOrDefault('max_threads', 0)", "query_function_forbidden"),
    ("SELECT getSetting('readonly')", "query_function_forbidden"),
    ("SELECT GETSERVERSETTING('path')", "query_function_forbidden"),
    ("SELECT `getServerSetting`('path')", "query_function_forbidden"),
    ('SELECT "getServerSetting"(\'path\')', "query_function_forbidden"),
    ("SELECT currentDatabase()", "query_function_forbidden"),
    ("SELECT currentUser()", "query_function_forbidden"),
    ("SELECT user()", "query_function_forbidden"),
    ("SELECT current_user", "query_function_forbidden"),
    ("SELECT CURRENT_USER", "query_function_forbidden"),
    ('SELECT "current_database"', "query_function_forbidden"),
    ("SELECT tenant FROM events WHERE tenant != database", "query_function_forbidden"),
    ("SELECT hostName()", "query_function_forbidden"),
    ("SELECT hostname FROM events", "query_function_forbidden"),
    ("SELECT FQDN()", "query_function_forbidden"),
    ("SELECT version()", "query_function_forbidden"),
    ("SELECT uptime()", "query_function_forbidden"),
    ("SELECT serverUUID()", "query_function_forbidden"),
    ("SELECT tcpPort()", "query_function_forbidden"),
    ("SELECT displayName()", "query_function_forbidden"),
    ("SELECT shardNum()", "query_function_forbidden"),
    ("SELECT buildId()", "query_function_forbidden"),
    ("SELECT getMacro('replica')", "query_function_forbidden"),
    ("SELECT timezone()", "query_function_forbidden"),
    ("SELECT filesystemAvailable()", "query_function_forbidden"),
    ("SELECT queryID(), initialQueryID()", "query_function_forbidden"),
    ("SELECT transactionID()", "query_function_forbidden"),
    ("SELECT getClientHTTPHeader('Authorization')", "query_function_forbidden"),
    ("SELECT currentRoles()", "query_function_forbidden"),
    ("SELECT currentProfiles()", "query_function_forbidden"),
    ("SELECT sleep(3)", "query_function_forbidden"),
    ("SELECT sleepEachRow(1) FROM events", "query_function_forbidden"),
    ('SELECT "sleep"(3)', "query_function_forbidden"),
    ("SELECT countIf(sleep(1) = 0) FROM events", "query_function_forbidden"),
    ("SELECT throwIf(1)", "query_function_forbidden"),
    ("SELECT dictGet('tenants', 'name', 1)", "query_function_forbidden"),
    ("SELECT dictGetString('tenants', 'name', 1)", "query_function_forbidden"),
    ("SELECT joinGet('sealstream.receipts', 'receipt', 'x')", "query_function_forbidden"),
    ("SELECT hasColumnInTable('sealstream', 'receipts', 'receipt')", "query_function_forbidden"),
    ("SELECT globalIn(event_id, receipts) FROM events", "query_function_forbidden"),
    ("SELECT notIn(event_id, receipts) FROM events", "query_function_forbidden"),
    ("SELECT arrayReduce('sum', [1])", "query_function_forbidden"),
    ("SELECT initializeAggregation('sumState', 1)", "query_function_forbidden"),
    ("SELECT formatRow('JSONEachRow', 1)", "query_function_forbidden"),
    ("SELECT url('http://x/')", "query_function_forbidden"),
    ("SELECT aiGenerate('hi')", "query_function_forbidden"),
    ("SELECT aggThrow(1) FROM events", "query_function_forbidden"),
    ("SELECT arrayMap(x -> getServerSetting('path'), [1])", "query_function_forbidden"),
    ("SELECT toString(currentDatabase())", "query_function_forbidden"),
    ("SELECT tenant FROM events WHERE tenant = currentUser()", "query_function_forbidden"),
    ("SELECT * APPLY(toString) FROM events", "query_function_forbidden"),
    ("SELECT sumFile(1)", "query_function_forbidden"),
    # the guard's own names
    ("SELECT 1 AS __sealstream_t", "query_identifier_reserved"),
    ("WITH __sealstream_cte_1 AS (SELECT 1) SELECT * FROM __sealstream_cte_1",
     "query_identifier_reserved"),
    ("SELECT __SEALSTREAM_T.tenant FROM events", "query_identifier_reserved"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "code"), REFUSED)
def test_the_guard_refuses_what_an_analyst_may_not_run(sql: str, code: str) -> None:
    with pytest.raises(QueryRejected) as caught:
        guard(sql, analyst("acme"), DB)
    assert caught.value.code == code, str(caught.value)


OPERATOR_REFUSED = [
    (sql, code)
    for sql, code in REFUSED
    if code != "query_table_forbidden" or "system" in sql.lower() or "information" in sql.lower()
]


@pytest.mark.parametrize(("sql", "code"), OPERATOR_REFUSED)
def test_auditors_are_refused_the_same_server_state_functions_and_clauses(
    sql: str, code: str
) -> None:
    with pytest.raises(QueryRejected) as caught:
        guard(sql, operator(), DB)
    assert caught.value.code in (code, "query_table_forbidden"), str(caught.value)


def test_the_guard_scopes_every_table_to_the_tenant_and_reads_final() -> None:
    sql = guard(
        "WITH x AS (SELECT event_id FROM events) SELECT count() FROM x "
        "JOIN dead_letters AS d ON 1 = 1",
        analyst("o'hara"),
        DB,
    )
    assert sql == (
        "WITH __sealstream_cte_1 AS (SELECT event_id FROM (SELECT * FROM sealstream.events AS "
        "__sealstream_t FINAL WHERE __sealstream_t.tenant = 'o''hara' LIMIT 18446744073709551615) "
        "AS events) SELECT count() FROM __sealstream_cte_1 AS x JOIN (SELECT * FROM "
        "sealstream.dead_letters AS __sealstream_t WHERE __sealstream_t.tenant = 'o''hara' "
        "LIMIT 18446744073709551615) AS d ON 1 = 1"
    )
    unscoped = guard("SELECT * FROM checkpoints", operator(), DB)
    assert unscoped == (
        "SELECT * FROM (SELECT * FROM sealstream.checkpoints AS __sealstream_t) AS checkpoints"
    )
    assert "tenant" not in unscoped and "FINAL" not in unscoped  # auditors see rows as stored
    final = guard("SELECT * FROM dlq_replays FINAL", operator(), DB)  # FINAL where asked
    assert "FROM sealstream.dlq_replays AS __sealstream_t FINAL) AS dlq_replays" in final


def test_a_scalar_with_alias_is_not_a_table_and_every_cte_is_renamed() -> None:
    sql = guard(
        "WITH 1 AS events SELECT tenant, count() FROM events GROUP BY tenant", analyst("a"), DB
    )
    assert "FROM (SELECT * FROM sealstream.events AS __sealstream_t FINAL WHERE" in sql
    sql = guard("WITH events AS (SELECT * FROM events) SELECT * FROM events", analyst("a"), DB)
    assert sql.startswith("WITH __sealstream_cte_1 AS (SELECT * FROM (SELECT * FROM sealstream")
    assert sql.endswith("FROM __sealstream_cte_1 AS events")
    # CTE names are unique across scopes, so ClickHouse cannot pick the wrong one
    sql = guard(
        "WITH e AS (SELECT 1 AS n) SELECT * FROM (WITH e AS (SELECT 2 AS n) SELECT * FROM e), e",
        analyst("a"),
        DB,
    )
    assert "__sealstream_cte_1 AS e" in sql and "__sealstream_cte_2 AS e" in sql


def test_the_function_allow_list_holds_nothing_that_reads_server_state() -> None:
    assert not ALLOWED_FUNCTIONS & SERVER_STATE_FUNCTIONS
    for name in SERVER_STATE_FUNCTIONS | {"sleep", "sleepeachrow", "throwif", "dictget", "file"}:
        assert not function_allowed(name), name
        assert not function_allowed(name.upper()), name
    for name in ("countIf", "sumMap", "uniqExactState", "quantilesMerge", "avgOrNull",
                 "sumIfOrNull", "countDistinct", "groupArrayDistinct", "COUNT", "Sum"):  # fmt: skip
        assert function_allowed(name), name
    assert not function_allowed("sleepIf") and not function_allowed("fileState")
    assert not function_allowed("x" * 200)
    assert "count" in AGGREGATES and "ifnull" not in AGGREGATES


# -- run(): the limits ride on every query -------------------------------------------------


@dataclass
class FakeResult:
    column_names: tuple[str, ...] = ("n",)
    column_types: tuple[Any, ...] = ()
    result_rows: list[tuple[Any, ...]] = field(default_factory=lambda: [(1,)])


class CapturingClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def query(self, sql: str, settings: dict[str, Any] | None = None) -> FakeResult:
        self.calls.append((sql, dict(settings or {})))
        return FakeResult(column_types=(type("T", (), {"name": "UInt8"})(),))


def test_run_sends_the_limits_with_every_query_and_readonly_last() -> None:
    client = CapturingClient()
    result = run(client, "SELECT 1", 500, 7)
    assert result.rows == [[1]] and result.types == ["UInt8"]
    sent = client.calls[0][1]
    assert sent == query_settings(500, 7, QueryLimits())
    assert sent["max_result_rows"] == 500 and sent["result_overflow_mode"] == "throw"
    assert sent["max_execution_time"] == 7 and sent["max_memory_usage"] == 1024**3
    assert sent["max_result_bytes"] == 512 * 1024**2 and sent["read_overflow_mode"] == "throw"
    assert {"max_rows_to_read", "max_bytes_to_read", "timeout_overflow_mode"} <= set(sent)
    assert list(sent)[-1] == "readonly" and sent["readonly"] == 1
    settings = ClickHouseSettings(query_max_memory_bytes=64 * 1024**2, query_max_rows_to_read=9)
    run(client, "SELECT 2", 1, 1, QueryLimits.from_settings(settings))
    sent = client.calls[1][1]
    assert sent["max_memory_usage"] == 64 * 1024**2 and sent["max_rows_to_read"] == 9


# -- allowed: runs on a real engine and returns acme's rows only -----------------------------

Check = Callable[[list[list[Any]], dict[str, Any]], bool]


def count_is(key: str) -> Check:
    return lambda rows, t: rows == [[t[key]]]


def acme_only(rows: list[list[Any]], t: dict[str, Any]) -> bool:
    return bool(rows) and all(cell == "acme" for row in rows for cell in row)


ALLOWED: dict[str, tuple[str, Check]] = {
    "scalar WITH named like the table": (
        "WITH 1 AS events SELECT tenant, count() FROM events GROUP BY tenant",
        lambda rows, t: rows == [["acme", t["events"]]],
    ),
    "scalar WITH subquery named like the table": (
        "WITH (SELECT 1) AS events SELECT tenant, count() FROM events GROUP BY tenant",
        lambda rows, t: rows == [["acme", t["events"]]],
    ),
    "CTE named like the table it reads": (
        "WITH events AS (SELECT * FROM events) SELECT tenant, count() FROM events GROUP BY tenant",
        lambda rows, t: rows == [["acme", t["events"]]],
    ),
    "CTE defined in a subquery, name read outside": (
        "SELECT count() FROM (WITH events AS (SELECT 1 AS one) SELECT * FROM events) AS q, events",
        count_is("events"),
    ),
    "CTE shadowed in a scalar subquery": (
        "SELECT (SELECT count() FROM (WITH events AS (SELECT 1) SELECT * FROM events)), "
        "count() FROM events",
        lambda rows, t: rows == [[1, t["events"]]],
    ),
    "CTE shadowing three levels down": (
        "WITH a AS (SELECT * FROM events) SELECT count() FROM "
        "(SELECT * FROM (WITH events AS (SELECT * FROM a) SELECT * FROM events))",
        count_is("events"),
    ),
    "CTE seen in a nested IN subquery": (
        "WITH mine AS (SELECT event_id FROM events) "
        "SELECT count() FROM events WHERE event_id IN (SELECT event_id FROM mine)",
        count_is("events"),
    ),
    "CTE in both UNION branches": (
        "WITH e AS (SELECT tenant FROM events) SELECT tenant FROM e UNION ALL SELECT tenant FROM e",
        lambda rows, t: len(rows) == 2 * t["events"] and acme_only(rows, t),
    ),
    "scalar WITH counting the table": (
        "WITH (SELECT count() FROM events) AS n SELECT n",
        count_is("events"),
    ),
    "an alias named tenant does not move the filter": (
        "WITH 'globex' AS tenant SELECT count() FROM events",
        count_is("events"),
    ),
    "a select alias named tenant": (
        "SELECT count() FROM (SELECT 'globex' = 'globex' AS tenant FROM events)",
        count_is("events"),
    ),
    "a table aliased as another table": (
        "SELECT count() FROM dead_letters AS events",
        count_is("dead"),
    ),
    "a subquery aliased as a table": (
        "SELECT count() FROM (SELECT * FROM dead_letters) AS events",
        count_is("dead"),
    ),
    "backquoted table": ("SELECT count() FROM `events`", count_is("events")),
    "double-quoted table": ('SELECT count() FROM "events"', count_is("events")),
    "qualified with the database": ("SELECT count() FROM sealstream.events", count_is("events")),
    "quoted database and table": ('SELECT count() FROM `sealstream`."events"', count_is("events")),
    "parenthesized table": ("SELECT count() FROM (events)", count_is("events")),
    "comments hide nothing": (
        "SELECT /* FROM receipts */ count() FROM events -- UNION ALL SELECT count() FROM receipts",
        count_is("events"),
    ),
    "a nested comment": (
        "SELECT count() FROM events /* a /* nested */ UNION ALL SELECT 1 FROM receipts */",
        count_is("events"),
    ),
    "the tenant filter cannot be widened": (
        "SELECT tenant FROM events WHERE tenant = 'globex' OR 1 = 1",
        lambda rows, t: len(rows) == t["events"] and acme_only(rows, t),
    ),
    "another tenant's rows are not there": (
        "SELECT count() FROM events WHERE tenant = 'globex'",
        lambda rows, t: rows == [[0]],
    ),
    "the caller's own decisions, in full": (
        "SELECT tenant, detail FROM audit_decisions ORDER BY request_id",
        lambda rows, t: rows == [["acme", "mine"], ["acme", "mine"]],
    ),
    "IN a list naming both tenants": (
        "SELECT DISTINCT tenant FROM audit_decisions WHERE tenant IN ('acme', 'globex')",
        lambda rows, t: rows == [["acme"]],
    ),
    "inner join": (
        "SELECT e.tenant, d.tenant FROM events AS e INNER JOIN dead_letters AS d "
        "ON e.event_id = d.event_id",
        lambda rows, t: len(rows) == t["joined"] and acme_only(rows, t),
    ),
    "left join": (
        "SELECT e.tenant, d.tenant FROM events AS e LEFT JOIN dead_letters AS d "
        "ON e.event_id = d.event_id",
        lambda rows, t: len(rows) == t["events"] and {c for r in rows for c in r} <= {"acme", ""},
    ),
    "cross join": (
        "SELECT count() FROM events CROSS JOIN dead_letters",
        lambda rows, t: rows == [[t["events"] * t["dead"]]],
    ),
    "comma join": (
        "SELECT count() FROM events, audit_decisions",
        lambda rows, t: rows == [[t["events"] * t["decisions"]]],
    ),
    "full join": (
        "SELECT count() FROM events AS a FULL OUTER JOIN events AS b ON a.event_id = b.event_id",
        count_is("events"),
    ),
    "any left join": (
        "SELECT count() FROM events AS a ANY LEFT JOIN audit_decisions AS b ON a.tenant = b.tenant",
        count_is("events"),
    ),
    "semi join": (
        "SELECT count() FROM events AS a SEMI LEFT JOIN dead_letters AS b "
        "ON a.event_id = b.event_id",
        count_is("joined"),
    ),
    "join using": (
        "SELECT count() FROM events AS a JOIN events AS b USING (event_id)",
        count_is("events"),
    ),
    "subquery in the select list": (
        "SELECT (SELECT count() FROM dead_letters), "
        "(SELECT groupUniqArray(tenant) FROM audit_decisions)",
        lambda rows, t: rows == [[t["dead"], ["acme"]]],
    ),
    "subquery in WHERE": (
        "SELECT count() FROM events WHERE event_id IN (SELECT event_id FROM dead_letters)",
        count_is("joined"),
    ),
    "subquery in HAVING": (
        "SELECT tenant FROM events GROUP BY tenant "
        "HAVING count() > (SELECT count() FROM dead_letters)",
        lambda rows, t: rows == [["acme"]],
    ),
    "EXISTS": (
        "SELECT count() FROM events WHERE EXISTS (SELECT 1 FROM audit_decisions)",
        count_is("events"),
    ),
    "NOT IN and GLOBAL IN": (
        "SELECT count() FROM events WHERE event_id NOT IN (SELECT event_id FROM dead_letters) "
        "AND tenant GLOBAL IN (SELECT tenant FROM audit_decisions)",
        lambda rows, t: rows == [[t["events"] - t["joined"]]],
    ),
    "a subquery as a function argument": (
        "SELECT has((SELECT groupArray(tenant) FROM events), 'globex')",
        lambda rows, t: rows == [[0]],
    ),
    "union of three tables": (
        "SELECT tenant FROM events UNION ALL SELECT tenant FROM dead_letters "
        "UNION DISTINCT SELECT tenant FROM audit_decisions",
        acme_only,
    ),
    "intersect": (
        "SELECT tenant FROM events INTERSECT SELECT tenant FROM audit_decisions",
        acme_only,
    ),
    "except": (
        "SELECT DISTINCT tenant FROM audit_decisions EXCEPT SELECT tenant FROM events",
        lambda rows, t: rows == [],
    ),
    "array join": (
        "SELECT tenant FROM events ARRAY JOIN masked_fields AS m",
        lambda rows, t: len(rows) == t["masked"] and acme_only(rows, t),
    ),
    "the rollup views": (
        "SELECT tenant FROM events_minutely UNION ALL SELECT tenant FROM dead_letters_minutely",
        acme_only,
    ),
    "FINAL written by the analyst": ("SELECT count() FROM events FINAL", count_is("events")),
    "deduplicated: an event stored twice shows once": (
        "SELECT count(), uniqExact(event_id) FROM events",
        lambda rows, t: rows == [[t["events"], t["events"]]],
    ),
    "function name case variants": (
        "SELECT COUNT(), Count(), count() FROM events",
        lambda rows, t: rows == [[t["events"]] * 3],
    ),
    "combinators": (
        "SELECT countIf(tenant = 'globex'), uniqExactIf(event_id, 1), "
        "sumIfOrNull(1, tenant = 'acme') FROM events",
        lambda rows, t: rows == [[0, t["events"], t["events"]]],
    ),
    "state and merge": (
        "SELECT uniqExactMerge(s) FROM (SELECT uniqExactState(event_id) AS s FROM events)",
        count_is("events"),
    ),
    "window function": (
        "SELECT tenant, row_number() OVER (PARTITION BY tenant ORDER BY received_at) AS n "
        "FROM events ORDER BY n DESC LIMIT 1",
        lambda rows, t: rows == [["acme", t["events"]]],
    ),
    "WITH TOTALS": (
        "SELECT tenant, count() FROM audit_decisions GROUP BY tenant WITH TOTALS",
        lambda rows, t: rows == [["acme", t["decisions"]]],
    ),
    "LIMIT BY": (
        "SELECT tenant FROM events ORDER BY received_at LIMIT 1 BY tenant",
        lambda rows, t: rows == [["acme"]],
    ),
    "lambda, JSON and string functions": (
        "SELECT count() FROM events WHERE JSONExtractString(payload, 'email') LIKE 'pii:email:%' "
        "AND arrayAll(x -> length(x) > 0, masked_fields) AND lower(tenant) = 'acme'",
        count_is("events"),
    ),
    "dates and now()": (
        "SELECT count() FROM events WHERE toDate(occurred_at, 'UTC') <= today() + 1 "
        "AND dateDiff('second', received_at, now64(3)) >= 0",
        count_is("events"),
    ),
    "a query with no table": (
        "SELECT 1 + 1, now() > toDateTime('2020-01-01')",
        lambda rows, t: rows == [[2, 1]],
    ),
    "a parenthesized query": ("(SELECT count() FROM events)", count_is("events")),
    "parametrized types": (
        "SELECT CAST(bytes AS Decimal(10, 2)) = bytes, CAST(source AS Nullable(String)) IS NULL, "
        "CAST(occurred_at AS DateTime64(3, 'UTC')) = occurred_at, "
        "CAST(tenant AS LowCardinality(String)) FROM events LIMIT 1",
        lambda rows, t: rows == [[1, 1, 1, "acme"]],
    ),
}  # fmt: skip


# -- what runs reads only scoped tables, wherever a subquery stands ---------------------------

TOKENIZER = sqlglot.Dialect.get_or_raise("clickhouse")


def unscoped_source(out: str) -> str | None:
    """The first FROM/JOIN in ``out`` that reads neither a scoped subquery, nor our scoped
    table, nor a renamed CTE; None if there is none."""
    tokens = TOKENIZER.tokenize(out)
    for i, token in enumerate(tokens):
        if token.token_type not in (TokenType.FROM, TokenType.JOIN):
            continue
        if token.token_type == TokenType.JOIN and tokens[i - 1].token_type == TokenType.ARRAY:
            continue
        nxt = tokens[i + 1 : i + 6]
        if nxt[0].token_type == TokenType.L_PAREN or nxt[0].text.startswith("__sealstream_cte_"):
            continue
        texts = [t.text for t in nxt]
        if texts[0] == DB and texts[1] == "." and texts[3:5] == ["AS", "__sealstream_t"]:
            continue
        return " ".join(texts)
    return None


PLACES = [
    "SELECT arrayMap(x -> {s}, [1])",
    "SELECT arrayMap(x -> x + {s}, [1]) FROM events",
    "SELECT CASE WHEN {s} > 0 THEN 1 ELSE {s} END",
    "SELECT count() OVER (PARTITION BY {s}) FROM events",
    "SELECT * FROM events ORDER BY {s}",
    "SELECT * FROM events LIMIT {s}",
    "SELECT * FROM events LIMIT 1 OFFSET {s}",
    "SELECT [{s}, 1]",
    "SELECT ({s}, 1)",
    "SELECT map('a', {s})",
    "SELECT [1, 2][{s}]",
    "SELECT CAST({s} AS String)",
    "SELECT {s}::String",
    "SELECT 1 IN [{s}]",
    "SELECT 1 IN ({s}, 2)",
    "SELECT quantile({s})(bytes) FROM events",
    "SELECT tenant FROM events GROUP BY tenant, {s}",
    "SELECT tenant FROM events WHERE tenant = 'a' AND {s} > 0 OR NOT {s}",
    "SELECT * FROM events PREWHERE {s} > 0",
    "SELECT * FROM events QUALIFY {s} > 0",
    "SELECT tenant FROM events LIMIT 1 BY {s}",
    "SELECT * FROM events ORDER BY received_at WITH FILL FROM {s}",
    "SELECT * FROM events AS a JOIN events AS b ON a.event_id = b.event_id AND {s} > 0",
    "SELECT * FROM events ARRAY JOIN [{s}] AS x",
    "SELECT * FROM events ARRAY JOIN arrayMap(x -> {s}, masked_fields) AS x",
    "SELECT if({s}, 1, 2)",
    "SELECT {s} ? 1 : 2",
    "SELECT -{s}",
    "SELECT {s} BETWEEN 1 AND {s}",
    "SELECT countIf({s} > 0) FROM events",
    "SELECT count() FILTER (WHERE {s} > 0) FROM events",
    "SELECT * EXCEPT (payload) REPLACE ({s} AS bytes) FROM events",
    "WITH {s} AS n SELECT n",
    "WITH {s} + 1 AS n SELECT n",
    "WITH x AS (SELECT {s} AS n) SELECT * FROM x",
    "SELECT * FROM (SELECT {s}) AS q",
    "SELECT EXISTS({s})",
    "SELECT toString({s}) || 'x'",
    "SELECT 1 UNION ALL SELECT {s}",
    "SELECT row_number() OVER w FROM events WINDOW w AS (PARTITION BY {s})",
    "SELECT arrayFilter((x, y) -> y > {s}, [1], [2])",
    "SELECT * FROM events WHERE tenant GLOBAL NOT IN ({s})",
    "SELECT (SELECT (SELECT {s}))",
    "SELECT * FROM (SELECT * FROM (SELECT * FROM events WHERE {s} > 0))",
]
SUBQUERIES = {
    "(SELECT count() FROM receipts)": False,
    "(SELECT max(event_id) FROM sealstream.events_by_id)": False,
    "(SELECT count() FROM system.tables)": False,
    "(SELECT count() FROM events)": True,
    "(WITH receipts AS (SELECT 1 AS n) SELECT count() FROM receipts)": True,
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("subquery", sorted(SUBQUERIES))
def test_a_subquery_anywhere_reads_scoped_tables_or_is_refused(place: str, subquery: str) -> None:
    sql = place.format(s=subquery)
    try:
        out = guard(sql, analyst("acme"), DB)
    except QueryRejected:
        return  # refused is safe; refusing an allowed table is a usability matter
    assert SUBQUERIES[subquery], f"a forbidden table passed: {sql} -> {out}"
    assert unscoped_source(out) is None, out


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_what_runs_for_an_allowed_query_reads_only_scoped_tables(name: str) -> None:
    out = guard(ALLOWED[name][0], analyst("acme"), DB)
    assert unscoped_source(out) is None, out


# -- the project's own queries: they all still pass -------------------------------------------

PROJECT: dict[str, tuple[str, str]] = {
    # sinks/clickhouse/access.py hot_reader strips "{db}." before the endpoint
    "dlq stored (ops/cli/dlq.py)": (
        "operator", "SELECT event_id FROM {db}.events_by_id WHERE event_id IN ('a', 'b')"),
    "dashboard rows (ops/dashboard)": ("operator", "SELECT count() FROM events"),
    "benchmarks/e2e.py count": ("operator", "SELECT count() FROM events WHERE source = 'bench-x'"),
    "benchmarks/e2e.py spread": (
        "operator",
        "SELECT quantileExact(0.25)(toUnixTimestamp64Milli(stored_at)), "
        "quantileExact(0.75)(toUnixTimestamp64Milli(stored_at)) FROM events WHERE source = 'b'"),
    "benchmarks/e2e.py latency": (
        "operator",
        "SELECT event_id, toUnixTimestamp64Milli(stored_at) FROM events WHERE source = 'b'"),
    "tests/integration/pipeline.py hot ids": (
        "operator", "SELECT DISTINCT event_id FROM events WHERE tenant = 'acme'"),
    "tests/integration/pipeline.py rollup": (
        "operator", "SELECT sum(events) FROM events_minutely WHERE tenant = 'acme'"),
    "tests/integration/pipeline.py dead": (
        "operator", "SELECT source_partition, source_offset FROM dead_letters"),
    "tests/integration/test_sinks.py by tenant": (
        "analyst", "SELECT tenant, count() AS n FROM events GROUP BY tenant ORDER BY tenant"),
    "tests/integration/test_sinks.py payload": ("analyst", "SELECT payload FROM events LIMIT 1"),
    "tests/integration/test_sinks.py dead": ("analyst", "SELECT count() AS n FROM dead_letters"),
    "tests/integration/test_sinks.py rollup": (
        "analyst", "SELECT sum(events) FROM events_minutely"),
    "tests/integration/test_sinks.py lookup": (
        "operator", "SELECT row FROM events_by_id WHERE event_id = 'x'"),
}  # fmt: skip

# Collected from the modules themselves in the child (verify, trail, demo, dashboard, Grafana).
COLLECT = """
import datetime as dt
from sinks.objects.reader import Selection
from sinks.verify import hot_sql
from sinks.trail import StoreSource
from ops.demo import count_hot
from ops.dashboard import Collector
from tests.unit.test_grafana import clickhouse_queries, expand, load_dashboard

def collected():
    found = {}
    day = dt.date(2026, 11, 30)
    for name, selection in {"all": Selection(), "since": Selection(since=day),
                            "until": Selection(until=day), "tenant": Selection(tenant="acme"),
                            "type": Selection(event_type="payment")}.items():
        found[f"verify {name}"] = ("operator", hot_sql(selection))
        found[f"verify {name} page"] = ("operator", hot_sql(selection, (1, 2), 50_000))
    sent = []
    def capture(sql):  # rows shaped as each caller reads them
        sent.append(sql)
        if "GROUP BY reason" in sql or "action = 'verify'" in sql:
            return []
        return [[[]]] if "quantiles" in sql else [[0]]
    source = StoreSource(lambda sql: sent.append(sql) or [])
    source.event("e1"), source.receipt("e1", "acme")
    source.dead_letters("e1"), source.replays("e1")
    source.decisions("acme", "r1", "2026-11-30 12:00:00.000")
    count_hot(capture, ["e1", "e2"])
    collector = Collector.__new__(Collector)
    collector._query = capture
    collector.hot()
    for i, sql in enumerate(sent):
        found[f"collected {i}: {sql[:40]}"] = ("operator", sql)
    for title, sql in clickhouse_queries(load_dashboard()).items():
        found[f"grafana {title}"] = ("operator", expand(sql))
    return found
"""

CHILD = (
    """
import json, sys
from schemas.samples import signed_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import ClickHouseSettings, SinkSettings
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
from sinks.clickhouse.query import analyst, guard, operator
from sinks.clickhouse.running import run
from sinks.clickhouse.sink import ClickHouseStore
from tests.unit.test_sinks_parts import batch_of, codec
"""
    + COLLECT
    + """
root, spec = sys.argv[1], json.loads(open(sys.argv[2]).read())
settings = ClickHouseSettings(embedded_dir=root + "/ch")
client = connect(settings)
migrate(client, settings)
db = settings.database
records = signed_chain(40, "events.raw/0", HmacKeyring("k1", {"k1": b"k" * 32}))
_, decoder = codec()
ClickHouseStore(client, settings, SinkSettings(), decoder, "g", {}).write(batch_of(records))
# acme's events stored twice (another offset, same key): FINAL shows each once
client.command(f"INSERT INTO {db}.events SELECT * REPLACE (kafka_offset + 1000 AS kafka_offset) "
               f"FROM {db}.events WHERE tenant = 'acme'")
ids = {t: [r["event_id"] for r in records if r["tenant"] == t] for t in ("acme", "globex")}
# both tenants' rows in one insert, so in the same parts and granules, as a sink writes them;
# each tenant's event type as in signed_chain (acme's payment, globex's page_view)
dead, decided = [], []
for tenant, kind in (("acme", "payment"), ("globex", "page_view")):
    dead += [f"(now64(3), 'schema_unknown', 'decode', '{tenant}', '{kind}', 1, '{e}')"
             for e in ids[tenant][:3] + [f"{tenant}-dead-only"]]
    note = "SECRET-globex" if tenant == "globex" else "mine"  # acme may read its own
    decided += [
        f"(now64(3), '{tenant}', '{kind}', 'query', 'ALLOW', 'ok', 'r-{tenant}', '{note}')",
        f"(now64(3), '{tenant}', '{kind}', 'query', 'DENY', 'scope', 'r2-{tenant}', '{note}')",
    ]
client.command(f"INSERT INTO {db}.dead_letters (failed_at, reason, stage, tenant, "
               f"event_type, bytes, event_id) VALUES {', '.join(dead)}")
client.command(f"INSERT INTO {db}.audit_decisions (decided_at, tenant, event_type, action, "
               f"decision, reason_code, request_id, detail) VALUES {', '.join(decided)}")
for tenant in ("acme", "globex"):
    client.command(f"INSERT INTO {db}.receipts (event_id, tenant, receipt) VALUES "
                   f"('{ids[tenant][0]}', '{tenant}', 'SECRET-receipt-{tenant}')")
client.command(f"INSERT INTO {db}.checkpoints (chain_id, seq, head_hash, signature) VALUES "
               "('events.raw/0', 1, 'SECRET-head', 'SECRET-signature')")
one = lambda sql: client.query(sql).result_rows[0][0]
truth = {
    "events": one(f"SELECT count() FROM {db}.events FINAL WHERE tenant = 'acme'"),
    "physical": one(f"SELECT count() FROM {db}.events WHERE tenant = 'acme'"),
    "dead": one(f"SELECT count() FROM {db}.dead_letters WHERE tenant = 'acme'"),
    "decisions": one(f"SELECT count() FROM {db}.audit_decisions WHERE tenant = 'acme'"),
    "joined": one(f"SELECT count() FROM {db}.dead_letters WHERE tenant = 'acme' AND event_id IN "
                  f"(SELECT event_id FROM {db}.events WHERE tenant = 'acme')"),
    "masked": one(f"SELECT sum(length(masked_fields)) FROM {db}.events FINAL "
                  "WHERE tenant = 'acme'"),
    "secrets": ids["globex"] + ["globex", "SECRET"],
}
def execute(sql, scope):
    try:
        result = run(client, guard(sql, scope, db), 10_000, 30)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:600]}
    return {"columns": result.columns, "rows": json.loads(json.dumps(result.rows, default=str))}
allowed = {name: execute(sql, analyst("acme")) for name, sql in spec["allowed"].items()}
# negative control: what the corpus's first query reads without the guard
control = [list(r) for r in client.query(
    f"WITH 1 AS events SELECT tenant, count() FROM {db}.events GROUP BY tenant").result_rows]
limited = {}  # ClickHouse does not apply max_result_rows to a bare UNION: the guard wraps it
for sql in spec["limited"]:
    try:
        limited[sql] = len(run(client, guard(sql, analyst("acme"), db), 5, 30).rows)
    except Exception as exc:
        limited[sql] = str(exc)[:300]
# what the engine evaluates: each probe divides by zero on a row of globex's, had it one
oracles = {sql: execute(sql, analyst("acme")) for sql in spec["oracles"]}
try:  # negative control: a plain scoped subquery (the guard's form before) is seen through
    client.query(f"SELECT count() FROM (SELECT * FROM {db}.dead_letters AS t WHERE t.tenant = "
                 "'acme') AS d WHERE intDiv(1, toUInt8(event_type != 'page_view')) = 1")
    oracle_control = "no error"
except Exception as exc:
    oracle_control = str(exc)[:300]
project = {**spec["project"], **collected()}
ran = {name: execute(sql.replace("{db}.", ""), operator() if who == "operator" else analyst("acme"))
       for name, (who, sql) in project.items()}
functions = [list(r) for r in client.query(
    "SELECT name, alias_to, categories, is_aggregate FROM system.functions").result_rows]
combinators = [r[0] for r in client.query(
    "SELECT name FROM system.aggregate_function_combinators").result_rows]
bare = {}
for name in spec["bare"]:
    try:
        client.query(f"SELECT {name}")
        bare[name] = True
    except Exception:
        bare[name] = False
print(json.dumps({"truth": truth, "allowed": allowed, "project": ran, "functions": functions,
                  "limited": limited, "control": control, "oracles": oracles,
                  "oracle_control": oracle_control,
                  "combinators": combinators, "bare": bare}, default=str))
"""
)

# names ClickHouse calls without parentheses (measured on chDB 4.4 / ClickHouse 26.9) and
# server-state names: each must be refused bare unless it is harmless and allowed
BARE = sorted(
    {
        "CURRENT_USER", "current_user", "currentUser", "USER", "user", "SESSION_USER",
        "CURRENT_DATABASE", "current_database", "currentDatabase", "DATABASE", "SCHEMA",
        "currentHandler", "currentRequestURL", "CURRENT_DATE", "CURRENT_TIMESTAMP", "NOW",
        "TODAY", "CURDATE", "LOCALTIME", "LOCALTIMESTAMP", "hostName", "version", "uptime",
        "serverUUID", "timezone", "getMacro", "tcpPort", "queryID", "currentQueryID",
    }
)  # fmt: skip


LIMITED = [
    "SELECT tenant FROM events UNION ALL SELECT tenant FROM events",
    "SELECT event_id FROM events INTERSECT SELECT event_id FROM events",
    "SELECT event_id FROM events EXCEPT SELECT '' ",
    "SELECT event_id FROM events",
]


# Conditions a caller writes, where the engine may evaluate them. Only globex's rows have the
# event type page_view (acme's are payments), so the division fails if the engine evaluates
# the caller's expression on one of globex's rows. The answer (an error or not, its text)
# would tell acme about globex's rows: an attack found chDB moving a caller's WHERE next to
# the tenant filter, evaluating it first and quoting the values it failed on. (A test reading
# the tenant column would not show it: the engine evaluates that with the tenant filter.)
_GLOBEX = "{t}event_type = 'page_view'"
_DIVIDE = f"intDiv(1, toUInt8(NOT {_GLOBEX.format(t='')}))"
ORACLES = [
    shape.format(table=table, divide=_DIVIDE)
    for table in sorted(ANALYST_TABLES)
    for shape in (
        "SELECT count() FROM {table} WHERE {divide} = 1",
        "SELECT count() FROM {table} AS x WHERE x.tenant = 'acme' AND {divide} = 1",
        "SELECT count() FROM (SELECT * FROM {table}) WHERE {divide} = 1",
        "SELECT event_type, count() FROM {table} GROUP BY event_type HAVING {divide} = 1",
        "SELECT sum({divide}) FROM {table}",
        "SELECT count() FROM {table} ORDER BY min({divide})",
        "SELECT count() FROM {table} AS a JOIN {table} AS b ON a.tenant = b.tenant "
        f"AND intDiv(1, toUInt8(NOT {_GLOBEX.format(t='a.')})) = 1",
        "SELECT count() FROM {table} WHERE {divide} = 1 OR 1 = 1",
        f"SELECT count() FROM {{table}} WHERE throwIf({_GLOBEX.format(t='')}) = 0",
    )
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("query-guard")
    spec = {
        "allowed": {name: sql for name, (sql, _) in ALLOWED.items()},
        "project": PROJECT,
        "bare": BARE,
        "limited": LIMITED,
        "oracles": ORACLES,
    }
    (tmp / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp), str(tmp / "spec.json")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_corpus_is_large_enough() -> None:
    assert len(REFUSED) + len(ALLOWED) >= 60
    assert len(ALLOWED) >= 30


def leaks(rows: list[list[Any]], truth: dict[str, Any]) -> list[str]:
    text = json.dumps(rows)
    return [secret for secret in truth["secrets"] if secret in text]


def test_the_leak_check_sees_what_an_unguarded_query_reads(engine: dict[str, Any]) -> None:
    assert leaks(engine["control"], engine["truth"]) == ["globex"]  # negative control


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_an_allowed_query_returns_only_the_callers_rows(engine: dict[str, Any], name: str) -> None:
    truth, got = engine["truth"], engine["allowed"][name]
    assert truth["events"] > 0 and truth["physical"] == 2 * truth["events"]  # duplicates stored
    assert "error" not in got, got.get("error")
    leaked = leaks(got["rows"], truth)
    assert not leaked, f"{name}: another tenant's or an operator's data: {leaked}"
    assert ALLOWED[name][1](got["rows"], truth), f"{name}: {got['rows']} (truth {truth})"


def test_the_engine_never_evaluates_a_callers_expression_on_another_tenants_row(
    engine: dict[str, Any],
) -> None:
    assert "Division by zero" in engine["oracle_control"]  # the probe sees what it reaches
    reached = {}
    for sql, got in engine["oracles"].items():
        error = got.get("error", "")
        if error.startswith("QueryRejected"):  # refused by the guard: nothing ran
            continue
        if "Division by zero" in error or "throwIf" in error or leaks([[error]], engine["truth"]):
            reached[sql] = error[:200]
        elif error:
            reached[sql] = f"unexpected: {error[:200]}"
    assert reached == {}
    assert sum("error" not in got for got in engine["oracles"].values()) >= 30  # they ran


def test_the_result_limit_holds_for_set_operations_too(engine: dict[str, Any]) -> None:
    for sql, got in engine["limited"].items():
        assert isinstance(got, str) and "TOO_MANY_ROWS" in got, (sql, got)


def test_every_query_the_project_sends_still_passes(engine: dict[str, Any]) -> None:
    ran = engine["project"]
    assert len(ran) >= 35, sorted(ran)  # the collected ones are there
    failed = {name: r["error"] for name, r in ran.items() if "error" in r}
    assert failed == {}, failed


def test_the_allow_list_matches_the_engines_functions(engine: dict[str, Any]) -> None:
    functions = {name: (alias, category, agg) for name, alias, category, agg in engine["functions"]}
    by_lower: dict[str, set[str]] = {}
    for name, (alias, _, _) in functions.items():
        by_lower.setdefault(name.lower(), set()).add(alias or name)
    # names the parser rewrites (DATE_ADD, ...) or matchers, not functions of the catalogue
    parser_forms = {
        "dateadd", "date_add", "datesub", "date_sub", "timestampadd", "timestamp_add",
        "timestampsub", "timestamp_sub", "columns", "tostartoffiveminute", "ceiling",
        "date_bin", "time_bucket",
    }  # fmt: skip
    unknown = sorted(n for n in ALLOWED_FUNCTIONS if n not in by_lower and n not in parser_forms)
    assert unknown == [], f"allowed names the engine does not know (typos?): {unknown}"
    # every engine function the guard lets through is in a category that reads only rows
    safe_categories = {
        "Aggregate Functions", "Type Conversion", "Dates and Times", "Arrays", "String",
        "String Search", "String Splitting", "String Replacement", "JSON", "Mathematical",
        "Arithmetic", "Map", "Comparison", "Tuple", "Rounding", "Conditional", "Logical", "Null",
        "Hash", "URL", "IP Address", "UUID", "Encoding", "Bit", "Random Number",
    }  # fmt: skip
    harmless_other = {
        "bar", "formatreadablesize", "formatreadabledecimalsize", "formatreadablequantity",
        "formatreadabletimedelta", "parsereadablesize", "parsereadablesizeornull",
        "parsereadablesizeorzero", "parsetimedelta", "totypename", "tocolumntypename",
        "transform", "identity", "materialize", "countdigits", "isdecimaloverflow", "bytesize",
        "finalizeaggregation", "visiblewidth", "macnumtostring", "macstringtonum",
        "macstringtooui", "casewithexpression",
    }  # fmt: skip
    unsafe = []
    for name, (alias, category, _) in functions.items():
        if not function_allowed(name) or (alias and alias not in functions):
            continue  # refused, or an alias of a combinator form (groupArrayArray): its base
        target = functions.get(alias, (alias, category, 0)) if alias else (name, category, 0)
        if target[1] not in safe_categories and (alias or name).lower() not in harmless_other:
            unsafe.append((name, target[1]))
    assert unsafe == [], unsafe
    # a name that reads as a type before "(" passes the text check: none may be unsafe
    typed = []
    for name, (alias, category, _) in functions.items():
        tokens = TOKENIZER.tokenize(f"{name}(") if name.isidentifier() else []
        if tokens and tokens[0].token_type in TYPE_TOKENS and not function_allowed(name):
            target = functions.get(alias, (alias, category, 0))[1] if alias else category
            if target not in safe_categories and (alias or name).lower() not in harmless_other:
                typed.append((name, target))
    assert set(typed) <= {("nested", "Internal")}, typed
    # lowercased comparison is safe: names that differ only in case are one function
    for lowered, targets in by_lower.items():
        assert len({t.lower() for t in targets}) == 1, (lowered, targets)
    assert set(engine["combinators"]) >= {"If", "State", "Merge", "Array", "Map", "OrNull"}


def test_no_name_callable_without_parentheses_reads_server_state(engine: dict[str, Any]) -> None:
    callable_bare = {name for name, ok in engine["bare"].items() if ok}
    assert "current_user" in callable_bare  # the engine does call these: the check matters
    for name in callable_bare:
        lowered = name.lower()
        assert function_allowed(lowered) or lowered in SERVER_STATE_FUNCTIONS, name
        if lowered in SERVER_STATE_FUNCTIONS:
            with pytest.raises(QueryRejected) as caught:
                guard(f"SELECT {name}", analyst("acme"), DB)
            assert caught.value.code == "query_function_forbidden", name


# -- the endpoint -----------------------------------------------------------------------------


def principal(tenant: str, roles: set[str], scopes: set[str], subject: str = "s") -> Principal:
    return Principal(
        subject, tenant, frozenset(scopes), frozenset(roles), "test", None, 0, 2**31, "k1"
    )


TOKENS = {
    "acme": principal("acme", {"analyst"}, {"analytics:read"}, "ana"),
    "slow": principal("slow", {"analyst"}, {"analytics:read"}, "slowpoke"),
    "fast": principal("fast", {"analyst"}, {"analytics:read"}, "quick"),
    "auditor": principal("*", {"auditor"}, {"audit:read"}, "aud"),
    "analyst-no-scope": principal("acme", {"analyst"}, {"query"}),
    "auditor-no-scope": principal("*", {"auditor"}, {"analytics:read"}),
    "publisher": principal("acme", {"publisher"}, {"events:write"}),
}


class Verifier:
    def verify(self, token: str) -> Principal:
        if token == "explode":
            raise RuntimeError("a bug in the verifier")
        try:
            return TOKENS[token]
        except KeyError:
            raise AuthenticationError("unknown token", code="token_invalid") from None


class Audit:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail = fail

    def __call__(self, **record: Any) -> None:
        if self.fail:
            raise RuntimeError("kafka is down")
        self.records.append(record)


class Engine:
    """Fake engine handles: a query of tenant 'slow' blocks until ``release``; each handle runs
    one query at a time, as a chDB handle does."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.slow_started = threading.Event()
        self.handles = 0
        self.fail: Exception | None = None

    def handle(self) -> Any:
        self.handles += 1
        engine = self
        lock = threading.Lock()

        class Handle:
            def query(self, sql: str, settings: dict[str, Any] | None = None) -> FakeResult:
                with lock:
                    if engine.fail is not None:
                        raise engine.fail
                    if "'slow'" in sql:
                        engine.slow_started.set()
                        assert engine.release.wait(10), "never released"
                    return FakeResult(column_types=(type("T", (), {"name": "UInt8"})(),))

        return Handle()


def app_for(
    engine: Engine, audit: Audit | None = None, trail: Any = None, **limits: Any
) -> tuple[Any, Audit]:
    audit = audit or Audit()
    settings = ClickHouseSettings(**limits)
    app = create_query_app(
        engine.handle(), None, Verifier(), audit, DB, 1000, 30, None, trail,  # type: ignore[arg-type]
        settings=settings, clients=engine.handle,
    )  # fmt: skip
    return app, audit


@pytest.fixture
def engine_fake() -> Iterator[Engine]:
    engine = Engine()
    yield engine
    engine.release.set()  # no worker thread outlives the test


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sink")


def ask(client: httpx.AsyncClient, token: str | None, sql: str = "SELECT 1", **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/v1/query", json={"sql": sql}, headers=headers, **kw)


async def test_a_token_without_the_scope_is_refused_and_recorded(engine_fake: Engine) -> None:
    app, audit = app_for(engine_fake)
    async with client_for(app) as client:
        for token in ("analyst-no-scope", "auditor-no-scope"):
            answer = await ask(client, token)
            assert answer.status_code == 403
            assert answer.json()["error"]["code"] == "scope_required"
        answer = await ask(client, "publisher")
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "role_required")
        answer = await ask(client, None)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "token_missing"
        ok = await ask(client, "acme")
        assert ok.status_code == 200 and ok.json()["rows"] == [[1]]
        lookup = await client.get("/v1/audit/e1", headers={"Authorization": "Bearer acme"})
        assert (lookup.status_code, lookup.json()["error"]["code"]) == (403, "role_required")
        lookup = await client.get(
            "/v1/audit/e1", headers={"Authorization": "Bearer auditor-no-scope"}
        )
        assert (lookup.status_code, lookup.json()["error"]["code"]) == (403, "scope_required")
    reasons = [(r["action"], r["reason"], r["allow"]) for r in audit.records]
    assert reasons == [
        ("query", "DENY_SCOPE", False), ("query", "DENY_SCOPE", False),
        ("query", "DENY_ROLE", False), ("query", "QUERY_OK", True),
        ("audit_lookup", "DENY_ROLE", False), ("audit_lookup", "DENY_SCOPE", False),
    ]  # fmt: skip
    assert audit.records[0]["detail"]["scopes"] == ["query"]


async def test_the_audit_trail_needs_the_auditor_role_and_scope(engine_fake: Engine) -> None:
    def trail(read: Any, event_id: str, from_store: bool) -> dict[str, Any] | None:
        return {"event_id": event_id, "from_store": from_store} if event_id == "e1" else None

    app, audit = app_for(engine_fake, trail=trail)
    async with client_for(app) as client:
        auth = {"Authorization": "Bearer auditor"}
        found = await client.get("/v1/audit/e1?source=store", headers=auth)
        assert found.status_code == 200 and found.json() == {"event_id": "e1", "from_store": True}
        missing = await client.get("/v1/audit/e2", headers=auth)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "event_not_found")
    assert [r["reason"] for r in audit.records] == ["AUDIT_OK", "AUDIT_OK"]


async def test_one_tenants_slow_query_does_not_hold_up_another(engine_fake: Engine) -> None:
    app, _ = app_for(engine_fake, query_max_concurrent=4, query_max_concurrent_per_tenant=2)
    async with client_for(app) as client:
        slow = asyncio.create_task(ask(client, "slow", "SELECT count() FROM events"))
        assert await asyncio.to_thread(engine_fake.slow_started.wait, 10)
        # the slow query holds its handle until released; these must not wait for it
        fast = await asyncio.wait_for(ask(client, "fast"), 10)
        auditor = await asyncio.wait_for(ask(client, "auditor"), 10)
        assert fast.status_code == 200 and auditor.status_code == 200
        assert not slow.done() and not engine_fake.release.is_set()
        engine_fake.release.set()
        assert (await slow).status_code == 200
    assert engine_fake.handles >= 2  # a second handle on the engine ran them


async def test_a_tenant_over_its_limit_gets_429_with_retry_after(engine_fake: Engine) -> None:
    app, audit = app_for(
        engine_fake, query_max_concurrent_per_tenant=1, query_queue_timeout_s=0, query_queue_depth=0
    )
    async with client_for(app) as client:
        first = asyncio.create_task(ask(client, "slow", "SELECT count() FROM events"))
        assert await asyncio.to_thread(engine_fake.slow_started.wait, 10)
        second = await asyncio.wait_for(ask(client, "slow", "SELECT 1"), 10)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "query_concurrency_limited"
        assert second.headers["Retry-After"] == "1"
        other = await asyncio.wait_for(ask(client, "fast"), 10)  # other tenants are served
        assert other.status_code == 200
        engine_fake.release.set()
        assert (await first).status_code == 200
        again = await ask(client, "slow", "SELECT 1")  # the slot is free again
        assert again.status_code == 200
    assert [r["reason"] for r in audit.records if r["tenant"] == "slow"] == [
        "QUERY_LIMITED", "QUERY_OK", "QUERY_OK"
    ]  # fmt: skip


async def test_a_query_waits_briefly_for_its_tenants_slot(engine_fake: Engine) -> None:
    app, _ = app_for(engine_fake, query_max_concurrent_per_tenant=1, query_queue_timeout_s=30)
    service = app.state.query_service
    async with client_for(app) as client:
        first = asyncio.create_task(ask(client, "slow", "SELECT count() FROM events"))
        assert await asyncio.to_thread(engine_fake.slow_started.wait, 10)
        queued = asyncio.create_task(ask(client, "slow", "SELECT 1"))
        while not service.admission.waiting("tenant:slow"):  # the second one is queued
            await asyncio.sleep(0.01)
        assert not queued.done()
        engine_fake.release.set()
        assert (await first).status_code == 200 and (await queued).status_code == 200


async def test_a_body_over_the_limit_is_refused_without_reading_the_rest(
    engine_fake: Engine,
) -> None:
    app, _ = app_for(engine_fake)
    consumed = 0
    chunk = b" " * 16 * 1024

    async def body(chunks: int) -> AsyncIterator[bytes]:
        nonlocal consumed
        for _ in range(chunks):
            consumed += 1
            yield chunk

    auth = {"Authorization": "Bearer acme"}
    async with client_for(app) as client:
        answer = await client.post("/v1/query", content=body(1000), headers=auth)  # chunked
        assert answer.status_code == 413 and answer.json()["error"]["code"] == "query_too_large"
        assert consumed <= MAX_SQL_BYTES // len(chunk) + 2, consumed  # not the 1000 chunks
        consumed = 0
        declared = {**auth, "Content-Length": str(10 * MAX_SQL_BYTES)}
        answer = await client.post("/v1/query", content=body(640), headers=declared)
        assert answer.status_code == 413 and consumed <= 1, consumed  # refused before reading
        small = await client.post("/v1/query", content=b'{"sql": "SELECT 1"}', headers=auth)
        assert small.status_code == 200


async def test_every_failure_is_json_and_never_a_500(engine_fake: Engine) -> None:
    app, _ = app_for(engine_fake)
    auth = {"Authorization": "Bearer acme"}
    async with client_for(app) as client:
        cases = {
            "not json": await client.post("/v1/query", content=b"{", headers=auth),
            "no sql": await client.post("/v1/query", json={"q": 1}, headers=auth),
            "bad format": await client.post(
                "/v1/query", json={"sql": "SELECT 1", "format": "x"}, headers=auth),
            "a list": await client.post("/v1/query", json=["SELECT 1"], headers=auth),
            "refused": await ask(client, "acme", "SELECT * FROM receipts"),
            "verifier bug": await ask(client, "explode"),
            "unknown route": await client.get("/v1/nothing"),
            "wrong method": await client.get("/v1/query"),
        }  # fmt: skip
        engine_fake.fail = DatabaseError(
            "Code: 241. DB::Exception: Query memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)"
        )
        cases["memory"] = await ask(client, "acme", "SELECT count() FROM events")
        engine_fake.fail = DatabaseError("Code: 47. DB::Exception: Unknown identifier x")
        cases["unknown column"] = await ask(client, "acme", "SELECT x FROM events")
        engine_fake.fail = RuntimeError("the engine handle broke")
        cases["engine bug"] = await ask(client, "acme", "SELECT count() FROM events")
    expected = {
        "not json": (400, "invalid_request"), "no sql": (400, "invalid_request"),
        "bad format": (400, "invalid_request"), "a list": (400, "invalid_request"),
        "refused": (400, "query_table_forbidden"), "verifier bug": (503, "unavailable"),
        "unknown route": (404, "not_found"), "wrong method": (405, "method_not_allowed"),
        "memory": (400, "query_limit_exceeded"), "unknown column": (400, "query_failed"),
        "engine bug": (503, "engine_unavailable"),  # audited: it may have run
    }  # fmt: skip
    got = {name: (r.status_code, r.json()["error"]["code"]) for name, r in cases.items()}
    assert got == expected


async def test_no_audit_record_no_answer(engine_fake: Engine) -> None:
    app, _ = app_for(engine_fake, audit=Audit(fail=True))
    async with client_for(app) as client:
        answer = await ask(client, "acme")
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "audit_unavailable"
        refused = await ask(client, "analyst-no-scope")  # a refusal stands without its record
        assert refused.status_code == 403


def test_a_syntax_error_names_where_without_terminal_escapes() -> None:
    with pytest.raises(QueryRejected) as caught:
        guard("SELECT (1 FROM events", analyst("acme"), DB)
    assert caught.value.code == "query_syntax" and "Line 1, Col: 14" in str(caught.value)
    assert "\x1b" not in str(caught.value)  # sqlglot underlines the spot for a terminal
