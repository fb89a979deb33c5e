"""ClickHouse's HTTP interface on the query endpoint (sinks/clickhouse/http_protocol.py).

The parts (parameters and settings, the format, credentials, errors, an INSERT's statement
before its data) are tested as functions; the routes run on the real app with fake engine
handles that record the SQL they are given and answer bytes, as the engine renders them. The
real engine and clickhouse-connect's own client are tests/integration/test_clickhouse_http.py.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import zlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import lz4.frame
import pytest
import zstandard
from clickhouse_connect.driver.exceptions import DatabaseError
from starlette.requests import Request

from sealstream.auth import AuthenticationError, Principal
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse import native
from sinks.clickhouse.endpoint import MAX_SQL_BYTES, EndpointError, create_query_app, read_body
from sinks.clickhouse.http_protocol import (
    HANDSHAKES,
    capped,
    clickhouse_token,
    content_type,
    error_response,
    inflated,
    parse_params,
    read_payload,
    resolve_format,
    split_format,
    statement_of,
)
from sinks.clickhouse.query import ANALYST_TABLES
from sinks.clickhouse.running import QueryLimits, query_settings
from tests.unit.test_query_guard import Audit  # the audit producer's stand-in

DB = "sealstream"
OURS = query_settings(1000, 30, QueryLimits())


def refusal(call: Any) -> EndpointError:
    with pytest.raises(EndpointError) as caught:
        call()
    return caught.value


# -- the parts ---------------------------------------------------------------------------------


def test_transport_and_harmless_settings_are_accepted_and_others_refused() -> None:
    params = parse_params(
        [
            ("query", "SELECT 1"), ("database", DB), ("session_id", "s"), ("query_id", "q1"),
            ("wait_end_of_query", "1"), ("send_progress_in_http_headers", "1"),
            ("enable_http_compression", "1"), ("output_format_json_quote_64bit_integers", "0"),
            ("http_headers_progress_interval_ms", "120000"), ("readonly", "0"),
            ("max_result_rows", "10"), ("client_protocol_version", "54405"),
        ],
        DB,
    )  # fmt: skip
    assert (params.query, params.query_id, params.protocol_version) == ("SELECT 1", "q1", 54405)
    assert params.lower == {"max_result_rows": 10}
    assert parse_params([], DB).query_id  # one is made when the client sends none
    for name, value, code in [
        ("allow_experimental_analyzer", "1", "setting_readonly"),
        ("additional_table_filters", "{}", "setting_readonly"),
        ("param_tenant", "globex", "not_supported"),
        ("compress", "1", "not_supported"),
        ("max_execution_time", "lots", "invalid_request"),
        ("max_result_rows", "-1", "invalid_request"),
        ("database", "system", "unknown_database"),
        ("query_id", "q\r\nSet-Cookie: x", "invalid_request"),
        ("max_result_rows", "²", "invalid_request"),
    ]:
        error = refusal(lambda n=name, v=value: parse_params([(n, v)], DB))
        assert (error.status, error.code) == (400, code), name
    assert "Cannot modify 'additional_table_filters' setting in readonly mode" in (
        refusal(lambda: parse_params([("additional_table_filters", "{}")], DB)).message
    )
    assert parse_params([("database", "default")], DB).query == ""  # unqualified names: ours


def test_a_client_lowers_the_limits_but_never_raises_them() -> None:
    assert OURS["max_rows_to_read"] == 0  # no limit of ours: a client's own applies
    settings = capped(
        OURS,
        {
            "max_result_rows": 10**9, "max_execution_time": 5, "max_memory_usage": 0,
            "max_rows_to_read": 100, "limit": 7,
        },
    )  # fmt: skip
    assert settings["max_result_rows"] == 1000  # ours: a client cannot raise it
    assert settings["max_execution_time"] == 5  # lower: taken
    assert settings["max_memory_usage"] == OURS["max_memory_usage"]  # 0 would lift it: ours
    assert (settings["max_rows_to_read"], settings["limit"]) == (100, 7)
    assert settings["result_overflow_mode"] == "throw"
    assert list(settings)[-1] == "readonly" and settings["readonly"] == 1


def test_the_format_is_the_trailing_clause_or_default_format() -> None:
    assert split_format("SELECT 1\n FORMAT Native") == ("SELECT 1", "Native")
    assert split_format("SELECT 1 format JSONEachRow ;\n") == ("SELECT 1", "JSONEachRow")
    inner = "SELECT * FROM (SELECT 1 FORMAT JSON) AS t"
    assert split_format(inner) == (inner, None)  # left to the guard, which refuses it
    assert split_format("SELECT 'FORMAT JSON'") == ("SELECT 'FORMAT JSON'", None)
    # a run of blanks after the clause cost its square (45,000: 7.8 s of the event loop)
    tail = "SELECT 1 FORMAT JSON" + " " * 50_000
    assert split_format(tail + "x") == (tail + "x", None)  # left to the guard
    assert split_format(tail + ";" + "\n" * 50_000) == ("SELECT 1", "JSON")
    assert split_format("SELECT 1 FORMAT JSON;;") == ("SELECT 1 FORMAT JSON;;", None)
    assert [resolve_format(n) for n in ("native", "TSV", "jsoneachrow", "CSVWithNames")] == [
        "Native", "TabSeparated", "JSONEachRow", "CSVWithNames"
    ]  # fmt: skip
    for name in ("Template", "CapnProto", "Protobuf", "nonsense"):  # those read schema files
        assert refusal(lambda n=name: resolve_format(n)).code == "unknown_format"
    assert content_type("Native") == "application/octet-stream"
    assert content_type("JSONEachRow").startswith("application/json")
    assert content_type("TabSeparatedWithNames").startswith("text/tab-separated-values")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_are_the_jwt_however_clickhouse_clients_send_it() -> None:
    assert clickhouse_token({"authorization": basic("anyone", "jwt")}, {}) == "jwt"
    assert clickhouse_token({"x-clickhouse-user": "u", "x-clickhouse-key": "jwt"}, {}) == "jwt"
    assert clickhouse_token({"authorization": "Bearer jwt"}, {}) is None  # the shared backend's
    assert clickhouse_token({}, {}) is None
    for headers, query, code in [
        ({"authorization": basic("default", "")}, {}, "token_missing"),
        ({"authorization": "Basic !!!"}, {}, "token_malformed"),
        ({"authorization": "Basic \xe9"}, {}, "token_malformed"),  # was a 500 before login
        ({"authorization": "basic YW5h\xff"}, {}, "token_malformed"),
        ({"authorization": "Bearer a", "x-clickhouse-key": "b"}, {}, "token_malformed"),
        ({"x-clickhouse-key": " "}, {}, "token_missing"),
        ({}, {"user": "u", "password": "jwt"}, "token_in_url"),
    ]:
        with pytest.raises(AuthenticationError) as caught:
            clickhouse_token(headers, query)
        assert caught.value.code == code, (headers, query)


def request_with(headers: list[tuple[bytes, bytes]], body: bytes = b"SELECT 1") -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, receive)


def test_a_content_length_of_unicode_digits_is_no_number() -> None:
    """'²' is a digit to str.isdigit and no number to int(): a 503 with a traceback, unaudited,
    under a server that lets such a header through."""
    odd = [(b"content-length", "²".encode("latin-1"))]
    with pytest.raises(EndpointError) as refused:
        asyncio.run(read_body(request_with(odd)))
    assert (refused.value.status, refused.value.code) == (400, "invalid_request")
    assert asyncio.run(read_payload(request_with(odd), 1000)) == (b"SELECT 1", 8)


def test_errors_are_written_as_clickhouse_writes_them() -> None:
    answer = error_response(EndpointError(400, "query_not_read_only", "only SELECT, not INSERT"))
    assert answer.status_code == 400 and answer.headers["X-ClickHouse-Exception-Code"] == "164"
    assert bytes(answer.body).decode() == (
        "Code: 164. DB::Exception: only SELECT, not INSERT [query_not_read_only]. (READONLY)\n"
    )
    engine = "Code: 396. DB::Exception: Limit for result exceeded. (TOO_MANY_ROWS_OR_BYTES)"
    answer = error_response(EndpointError(400, "query_limit_exceeded", engine))
    assert answer.headers["X-ClickHouse-Exception-Code"] == "396"  # the engine's own code
    assert bytes(answer.body).decode().strip() == engine
    limited = EndpointError(429, "query_concurrency_limited", "busy", headers={"Retry-After": "2"})
    answer = error_response(limited)
    assert (answer.headers["X-ClickHouse-Exception-Code"], answer.headers["Retry-After"]) == (
        "202", "2"
    )  # fmt: skip
    codes = {
        ("token_expired", 401): "516", ("role_required", 403): "497",
        ("query_table_forbidden", 400): "497", ("query_unresolved", 400): "344",
        ("query_too_large", 413): "393", ("audit_unavailable", 503): "1002",
    }  # fmt: skip
    for (code, status), number in codes.items():
        answer = error_response(EndpointError(status, code, "x"))
        assert (answer.status_code, answer.headers["X-ClickHouse-Exception-Code"]) == (
            status, number
        )  # fmt: skip


def test_an_inserts_statement_is_found_before_its_data_compressed_or_not() -> None:
    native = b"INSERT INTO events (event_id) FORMAT Native\n\x01\x01\x08event_id\x06String\x01x"
    assert statement_of("", native, True) == ("INSERT INTO events (event_id) FORMAT Native", True)
    assert statement_of("SELECT 1", b"", True) == ("SELECT 1", False)
    assert statement_of("SELECT count()", b"FROM events", True) == (
        "SELECT count()\nFROM events", False
    )  # fmt: skip
    text = b"INSERT INTO events FORMAT CSV\n1,2\n"  # text data: all of it goes to the guard
    assert statement_of("", text, True) == (text.decode(), False)
    assert statement_of("INSERT INTO events FORMAT RowBinary", b"\x00\x01", True)[1] is True
    assert refusal(lambda: statement_of("", b"\x00\x01", True)).status == 400
    assert refusal(lambda: statement_of("", b"x" * 10, False)).status == 413
    sql = b"SELECT tenant FROM events WHERE event_type = 'login'"
    packers = {"lz4": lz4.frame.compress, "gzip": gzip.compress, "zstd": zstd}
    for encoding, pack in {**packers, "deflate": zlib.compress}.items():
        assert inflated(pack(native), encoding, MAX_SQL_BYTES, whole=True) == native
        cut = pack(sql)[:-6]  # a cut-off body never runs as a shorter query
        cut_off = partial(inflated, cut, encoding, 100, whole=True)
        assert refusal(cut_off).code == "invalid_request"
        assert sql.startswith(inflated(cut, encoding, 100, whole=False))  # the start of more
        assert inflated(pack(sql * 10), encoding, 20, whole=True) == sql[:20]  # the caller's 413
    assert refusal(lambda: inflated(b"not lz4", "lz4", 100, whole=True)).code == "invalid_request"
    assert refusal(lambda: inflated(b"x", "br", 100, whole=True)).code == "not_supported"


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


# -- the routes, on fake engine handles --------------------------------------------------------


def principal(tenant: str, roles: set[str], scopes: set[str]) -> Principal:
    return Principal(
        f"sub-{tenant}", tenant, frozenset(scopes), frozenset(roles), "test", None, 0, 2**31, "k1"
    )


TOKENS = {
    "acme": principal("acme", {"analyst"}, {"analytics:read"}),
    "slow": principal("slow", {"analyst"}, {"analytics:read"}),
    "publisher": principal("acme", {"publisher"}, {"events:write"}),
}


class Verifier:
    def verify(self, token: str) -> Principal:
        try:
            return TOKENS[token]
        except KeyError:
            raise AuthenticationError("unknown token", code="token_invalid") from None


class Engine:
    """Handles that record what they run and answer ``b"rendered:" + sql``; a query of tenant
    'slow' waits for ``release``; ``fail`` makes every call raise."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.fail: Exception | None = None
        self.release = threading.Event()
        self.slow_started = threading.Event()

    def handle(self) -> Any:
        engine = self

        class Handle:
            def raw_query(self, sql: str) -> bytes:
                if engine.fail is not None:
                    raise engine.fail
                engine.ran.append(sql)
                if "'slow'" in sql:
                    engine.slow_started.set()
                    assert engine.release.wait(10), "never released"
                if sql.endswith("FORMAT TabSeparatedWithNamesAndTypes"):  # the engine's own
                    return (
                        b"displayName()\tversion()\trevision()\ttimezone()\n"
                        b"String\tString\tUInt32\tString\nsealstream\t26.9.2.1\t0\tEtc/UTC\n"
                    )
                return b"rendered:" + sql.encode()

        return Handle()


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine()
    yield engine
    engine.release.set()


def app_for(engine: Engine, **limits: Any) -> tuple[Any, Audit]:
    audit = Audit()
    app = create_query_app(
        engine.handle(), None, Verifier(), audit, DB, 1000, 30,  # type: ignore[arg-type]
        settings=ClickHouseSettings(**limits), clients=engine.handle,
    )  # fmt: skip
    return app, audit


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sink")


ACME = {"Authorization": basic("analyst", "acme")}


async def test_a_query_runs_tenant_scoped_within_our_limits_in_its_format(engine: Engine) -> None:
    app, audit = app_for(engine)
    async with client_for(app) as client:
        answer = await client.post(
            "/", content="SELECT count() FROM events\n FORMAT JSONEachRow", headers=ACME,
            params={"max_result_rows": "1000000000", "max_execution_time": "3", "query_id": "q"},
        )  # fmt: skip
    assert answer.status_code == 200, answer.text
    (ran,) = engine.ran
    assert answer.content == b"rendered:" + ran.encode()  # the engine's bytes, as they are
    assert "__sealstream_t.tenant = 'acme'" in ran and ran.endswith("\nFORMAT JSONEachRow")
    assert "max_result_rows = 1000," in ran and "max_execution_time = 3," in ran
    assert ran.split("SETTINGS ")[1].split("\n")[0].endswith("readonly = 1")
    assert answer.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert answer.headers["X-ClickHouse-Query-Id"] == "q"
    assert answer.headers["content-type"].startswith("application/json")
    (record,) = audit.records
    assert (record["action"], record["reason"], record["allow"]) == ("query", "QUERY_OK", True)
    assert record["detail"]["sql"] == "SELECT count() FROM events"
    assert record["detail"]["interface"] == "clickhouse_http"
    assert record["detail"]["format"] == "JSONEachRow" and record["detail"]["query_id"] == "q"


async def test_the_query_parameter_and_the_body_are_one_query(engine: Engine) -> None:
    app, _ = app_for(engine)
    key = {"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": "acme"}
    bearer = {"Authorization": "Bearer acme"}
    async with client_for(app) as client:
        joined = await client.post("/?query=SELECT%20count()", content="FROM events", headers=key)
        got = await client.get("/", params={"query": "SELECT 1", "default_format": "CSV"},
                               headers=bearer)  # fmt: skip
        assert joined.status_code == 200 and got.status_code == 200, (joined.text, got.text)
        assert "__sealstream_t.tenant = 'acme'" in engine.ran[0]
        assert engine.ran[1].startswith("SELECT 1\nSETTINGS ") and got.headers[
            "X-ClickHouse-Format"] == "CSV"  # fmt: skip
        plain = await client.post("/", content="SELECT 2", headers=ACME)
        assert plain.headers["X-ClickHouse-Format"] == "TabSeparated"  # ClickHouse's default


async def test_credentials_are_checked_and_refusals_are_clickhouse_errors(engine: Engine) -> None:
    app, audit = app_for(engine)
    async with client_for(app) as client:
        for path in ("/ping", "/"):  # liveness takes no credentials
            ok = await client.get(path, headers={"Authorization": basic("x", "bad")})
            assert (ok.status_code, ok.text) == (200, "Ok.\n")
        cases = {
            "none": {},
            "no password": {"Authorization": basic("default", "")},
            "bad token": {"Authorization": basic("analyst", "forged")},
            "bad key": {"X-ClickHouse-User": "a", "X-ClickHouse-Key": "forged"},
        }
        for name, headers in cases.items():
            answer = await client.post("/", content="SELECT 1", headers=headers)
            assert answer.status_code == 401, name
            assert answer.headers["X-ClickHouse-Exception-Code"] == "516", name
            assert answer.text.startswith("Code: 516. DB::Exception: "), name
        publisher = await client.post("/", content="SELECT 1", headers={
            "Authorization": basic("p", "publisher")})  # fmt: skip
        assert (publisher.status_code, publisher.headers["X-ClickHouse-Exception-Code"]) == (
            403, "497"
        )  # fmt: skip
        # the JSON endpoint keeps its bearer-only credentials and its JSON errors
        json_route = await client.post("/v1/query", json={"sql": "SELECT 1"}, headers=ACME)
        assert json_route.status_code == 401
        assert json_route.json()["error"]["code"] == "token_malformed"
    assert engine.ran == []
    assert [(r["reason"], r["allow"]) for r in audit.records] == [("DENY_ROLE", False)]


async def test_writes_are_refused_audited_and_never_reach_the_engine(engine: Engine) -> None:
    app, audit = app_for(engine)
    native = b"INSERT INTO events (event_id, tenant) FORMAT Native\n\x02\x01\x08event_id\x06S"
    async with client_for(app) as client:
        answers = [
            await client.post("/", content=lz4.frame.compress(native),
                              headers={**ACME, "Content-Encoding": "lz4"}),
            await client.post("/", params={"query": "INSERT INTO events FORMAT RowBinary"},
                              content=b"\x00\xff" * 50_000, headers=ACME),
            await client.post("/", content="INSERT INTO events (event_id) VALUES ('x')",
                              headers=ACME),
            await client.post("/", content="CREATE TABLE t (a UInt8) ENGINE = Memory",
                              headers=ACME),
            await client.post("/", params={"query": "SELECT 1"}, content=b"\x00data",
                              headers=ACME),
        ]  # fmt: skip
    for answer in answers[:4]:
        assert answer.status_code == 400, answer.text
        assert answer.headers["X-ClickHouse-Exception-Code"] == "164"
        assert "(READONLY)" in answer.text
    assert answers[4].status_code == 400 and "data after the query" in answers[4].text
    assert engine.ran == []
    reasons = [(r["reason"], r["detail"]["code"]) for r in audit.records]
    assert reasons == [("QUERY_REJECTED", "query_not_read_only")] * 4 + [
        ("QUERY_REJECTED", "query_syntax")
    ]  # fmt: skip
    assert audit.records[0]["detail"]["sql"] == "INSERT INTO events (event_id, tenant)"
    assert audit.records[1]["detail"]["data_bytes"] == 100_000


async def test_the_handshakes_are_answered_by_fixed_sql_and_audited(engine: Engine) -> None:
    app, audit = app_for(engine)
    async with client_for(app) as client:
        for sql in HANDSHAKES:
            answer = await client.post("/", content=f"{sql.upper()}\n FORMAT Native", headers=ACME)
            assert answer.status_code == 200, (sql, answer.text)
        refused = await client.post("/", content="SELECT version() + 1", headers=ACME)
        assert refused.status_code == 400  # anything else with version() meets the guard
    ran = dict(zip(HANDSHAKES, engine.ran, strict=True))
    assert ran["select version(), timezone()"].startswith("SELECT version(), timezone()\n")
    assert "max_result_rows" not in ran["select version()"]  # fixed answers, no table's rows
    settings = ran["select name, value, readonly from system.settings limit 10000"]
    assert "tuple('max_result_rows', '1000', 0)" in settings
    assert "tuple('readonly', '1', 1)" in settings and "system." not in settings
    tables = ran["select database, name from system.tables order by database, name"]
    assert all(f"tuple('sealstream', '{t}')" in tables for t in ANALYST_TABLES)
    assert "receipts" not in tables  # the caller's tables only
    assert all(r["detail"].get("handshake") for r in audit.records[: len(HANDSHAKES)])
    assert audit.records[-1]["reason"] == "QUERY_REJECTED"


async def test_the_engines_errors_and_faults_keep_their_clickhouse_shape(engine: Engine) -> None:
    app, audit = app_for(engine)
    async with client_for(app) as client:
        engine.fail = DatabaseError(
            "Code: 396. DB::Exception: Limit for result exceeded, max rows: 1000.00. "
            "(TOO_MANY_ROWS_OR_BYTES) (version 26.9.2.1)"
        )
        limited = await client.post("/", content="SELECT * FROM events", headers=ACME)
        engine.fail = RuntimeError("the handle broke")
        broken = await client.post("/", content="SELECT * FROM events", headers=ACME)
        engine.fail = None
        audit.fail = True
        unaudited = await client.post("/", content="SELECT 1", headers=ACME)
    assert (limited.status_code, limited.headers["X-ClickHouse-Exception-Code"]) == (400, "396")
    assert limited.text.startswith("Code: 396. DB::Exception: Limit for result exceeded")
    assert (broken.status_code, broken.headers["X-ClickHouse-Exception-Code"]) == (503, "1002")
    assert unaudited.status_code == 503 and "[audit_unavailable]" in unaudited.text
    # a query the engine took and never answered may have run: it is audited as well
    assert [r["reason"] for r in audit.records] == ["QUERY_FAILED", "QUERY_FAILED"]
    assert audit.records[1]["detail"]["error"] == "the engine did not answer"
    assert audit.records[1]["detail"]["sql"] == "SELECT * FROM events"


async def test_requests_the_engine_cannot_answer_are_refused_before_it(engine: Engine) -> None:
    app, _ = app_for(engine)
    async with client_for(app) as client:
        cases = {
            "setting": await client.post("/?allow_ddl=1", content="SELECT 1", headers=ACME),
            "format": await client.post("/", content="SELECT 1 FORMAT Protobuf", headers=ACME),
            "database": await client.post("/?database=system", content="SELECT 1", headers=ACME),
            "too large": await client.post("/", content=b"SELECT " + b"1" * MAX_SQL_BYTES,
                                           headers=ACME),
        }  # fmt: skip
    got = {name: (r.status_code, r.headers["X-ClickHouse-Exception-Code"]) for name, r in
           cases.items()}  # fmt: skip
    assert got == {
        "setting": (400, "164"), "format": (400, "73"), "database": (400, "81"),
        "too large": (413, "393"),
    }  # fmt: skip
    assert engine.ran == []


async def test_a_tenant_over_its_slots_gets_429_as_a_clickhouse_error(engine: Engine) -> None:
    app, audit = app_for(
        engine, query_max_concurrent_per_tenant=1, query_queue_timeout_s=0, query_queue_depth=0
    )
    slow = {"Authorization": basic("a", "slow")}
    async with client_for(app) as client:
        first = asyncio.create_task(client.post("/", content="SELECT 1 FROM events", headers=slow))
        assert await asyncio.to_thread(engine.slow_started.wait, 10)
        second = await asyncio.wait_for(client.post("/", content="SELECT 2", headers=slow), 10)
        engine.release.set()
        assert (await first).status_code == 200
    assert second.status_code == 429 and second.headers["Retry-After"] == "1"
    assert second.headers["X-ClickHouse-Exception-Code"] == "202"
    assert [r["reason"] for r in audit.records] == ["QUERY_LIMITED", "QUERY_OK"]


def test_a_native_block_is_written_in_the_clients_revision() -> None:
    tsv = b"a()\tn\nString\tUInt32\nx\\ty\t7\nz\t300\n"  # TSV escapes a tab as \t
    columns = b"\x02\x02" + b"\x03a()\x06String%s\x03x\ty\x01z" + b"\x01n\x06UInt32%s"
    data = b"\x07\x00\x00\x00\x2c\x01\x00\x00"
    assert native.block(tsv, 0) == columns % (b"", b"") + data  # what the engine writes
    assert native.block(tsv, 54405) == native.BLOCK_INFO + columns % (b"", b"") + data
    flagged = native.BLOCK_INFO + columns % (b"\x00", b"\x00") + data  # no custom serialization
    assert native.block(tsv, native.MIN_REVISION_WITH_CUSTOM_SERIALIZATION) == flagged
    assert native.varint(300) == b"\xac\x02"
    with pytest.raises(ValueError, match="Float64"):
        native.block(b"x\nFloat64\n1.5\n", 54460)


async def test_clickhouse_gos_hello_is_answered_in_its_revision_which_says_0(
    engine: Engine,
) -> None:
    app, audit = app_for(engine)
    hello = "SELECT displayName(), version(), revision(), timezone()"
    async with client_for(app) as client:
        answers = [
            await client.post(f"/?default_format=Native&client_protocol_version={revision}",
                              content=hello, headers=ACME)
            for revision in (54460, 0)
        ]  # fmt: skip
        later = await client.post(
            "/?default_format=Native&client_protocol_version=54460", content="SELECT 1",
            headers=ACME,
        )  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].content.startswith(native.BLOCK_INFO + b"\x04\x01\x0ddisplayName()")
    assert b"\x0asealstream\x09version()\x06String\x00\x0826.9.2.1" in answers[0].content
    assert b"\x0arevision()\x06UInt32\x00\x00\x00\x00\x00" in answers[0].content
    assert "toUInt32(0) AS `revision()`" in engine.ran[0]  # what the engine runs: no revision()
    assert engine.ran[1].endswith("FORMAT Native")  # no revision asked: the engine renders it
    assert later.content.startswith(b"rendered:") and engine.ran[2].endswith("FORMAT Native")
    assert [r["detail"].get("handshake") for r in audit.records] == [True, True, None]


async def test_no_free_engine_handle_is_engine_busy_not_a_failed_query(engine: Engine) -> None:
    """Refused before the engine had the query: nothing ran, so nothing is audited as failed."""
    app, audit = app_for(engine)
    pool = app.state.query_service.pool

    def busy(wait_s: float) -> Any:
        raise EndpointError(503, "engine_busy", "no engine handle is free; retry")

    pool._take = busy
    async with client_for(app) as client:
        answer = await client.post("/", content="SELECT count() FROM events", headers=ACME)
    assert answer.status_code == 503 and "[engine_busy]" in answer.text, answer.text
    assert "QUERY_FAILED" not in [r["reason"] for r in audit.records]
    assert engine.ran == []
