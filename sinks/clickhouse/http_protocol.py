"""ClickHouse's HTTP interface on the embedded engine's query endpoint, for ClickHouse's own
clients (clickhouse-connect's ``get_client``, tools that speak ClickHouse over HTTP).

``GET|POST /`` takes a query as ClickHouse does: the ``query`` parameter, a line break, then
the body; ``FORMAT`` at its end or ``default_format``; ``database`` and settings as URL
parameters. ``GET /ping`` (and ``GET /`` without a query) answers ``Ok.``. Every query runs on
``QueryService.serve``, the path of ``/v1/query``: the same access check, slots, guard, limits
and audit records; only the reading and the answer differ. The engine renders the answer in
the format asked for: what runs is the guarded SQL with the limits as its ``SETTINGS`` clause
(``readonly`` last) and the format. What this module adds to that path:

- credentials (``ClickHouseCredentials``): ``Authorization: Bearer <JWT>``, HTTP basic with the
  JWT as the password (any user name: the token alone says who calls), or
  ``X-ClickHouse-User`` with ``X-ClickHouse-Key: <JWT>``; never in the URL;
- settings (``parse_params``): the limits' settings may only lower the endpoint's; transport,
  compression, progress and formatting settings are accepted and ignored; any other setting is
  refused, as it is for a read-only ClickHouse user;
- the handshake queries of ClickHouse's clients (``HANDSHAKES``), answered by fixed SQL that
  reads no table of the caller's, instead of the guard (which refuses ``version()`` and
  ``system.*``); they are audited as every query is; ``revision()`` is 0, the Native revision
  the engine writes, and clickhouse-go's hello is written in the revision it sent (``native``);
- errors as ClickHouse writes them: ``Code: N. DB::Exception: <message>. (NAME)`` with
  ``X-ClickHouse-Exception-Code``, and the endpoint's statuses (401, 403, 400, 413, 429; 503
  when a retry may help), so the clients raise their ``DatabaseError`` with the message.
"""

from __future__ import annotations

import base64
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from starlette.authentication import AuthCredentials, BaseUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sealstream import inflate
from sealstream.auth import AuthenticationError, BearerBackend, TokenVerifier
from sinks.clickhouse import native
from sinks.clickhouse.endpoint import (
    MAX_SQL_BYTES,
    Asked,
    EndpointError,
    Execute,
    QueryService,
    http_error,
)
from sinks.clickhouse.query import QueryRejected, Scope, guard
from sinks.clickhouse.running import query_settings

log = logging.getLogger("sealstream.sink.query")

CLICKHOUSE_PATHS = frozenset({"/"})  # where ClickHouse's ways of sending credentials count
DISPLAY_NAME = "sealstream"
DRAIN_BYTES = 16 * 1024**2  # a refused INSERT's data is read and dropped up to this much
ENCODED_HEAD_BYTES = 1024**2  # of a compressed body, kept to decode the statement before data

_FORMAT_NAMES = (
    "Native", "RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes", "TabSeparated",
    "TabSeparatedRaw", "TabSeparatedWithNames", "TabSeparatedWithNamesAndTypes", "CSV",
    "CSVWithNames", "CSVWithNamesAndTypes", "JSON", "JSONCompact", "JSONStrings", "JSONEachRow",
    "JSONStringsEachRow", "JSONCompactEachRow", "JSONCompactEachRowWithNames",
    "JSONCompactEachRowWithNamesAndTypes", "Values", "Vertical", "Pretty", "PrettyCompact",
    "PrettyCompactMonoBlock", "PrettySpace", "Markdown", "XML", "Arrow", "ArrowStream",
    "Parquet", "ORC", "Null",
)  # fmt: skip
# output formats by their names in any case, and ClickHouse's aliases; none reads a file
FORMATS = {name.lower(): name for name in _FORMAT_NAMES} | {
    "tsv": "TabSeparated", "tsvraw": "TabSeparatedRaw", "tsvwithnames": "TabSeparatedWithNames",
    "tsvwithnamesandtypes": "TabSeparatedWithNamesAndTypes", "ndjson": "JSONEachRow",
    "jsonlines": "JSONEachRow",
}  # fmt: skip
_TEXT_FORMATS = ("Values", "Vertical", "Pretty", "Markdown")

# URL parameters of the protocol itself, not settings (read, or accepted and ignored)
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "query_id", "client_protocol_version", "compress",
    "decompress", "session_id", "session_timeout", "session_check", "quota_key",
    "wait_end_of_query", "buffer_size", "role", "user",
})  # fmt: skip
# settings that change nothing an answer holds: accepted and ignored (the endpoint's own
# overflow modes and readonly=1 always apply)
IGNORED_SETTINGS = frozenset({
    "enable_http_compression", "send_progress_in_http_headers",
    "cancel_http_readonly_queries_on_client_close", "date_time_input_format",
    "cast_string_to_dynamic_use_inference", "log_comment", "readonly", "result_overflow_mode",
    "timeout_overflow_mode", "read_overflow_mode",
})  # fmt: skip
IGNORED_PREFIXES = ("http_", "output_format_", "input_format_")
# the limits a client may lower (never raise), and ClickHouse's ``limit`` (truncates a result).
# Not max_rows_to_read/max_bytes_to_read: they count what is read before the tenant filter
# (whole granules, other tenants' rows among them), so a client's own value, searched, would
# tell how many rows other tenants have
LIMIT_SETTINGS = frozenset({
    "max_result_rows", "max_result_bytes", "max_execution_time", "max_memory_usage", "limit",
})  # fmt: skip
# set on every query: the JSON and XML formats' statistics (rows_read, bytes_read) count the
# same pre-filter reads
HIDDEN = {"output_format_write_statistics": 0}

# EndpointError.code -> ClickHouse's error code and name (the engine's errors keep their own)
CLICKHOUSE_CODES = {
    "role_required": (497, "ACCESS_DENIED"), "scope_required": (497, "ACCESS_DENIED"),
    "query_table_forbidden": (497, "ACCESS_DENIED"), "query_not_read_only": (164, "READONLY"),
    "setting_readonly": (164, "READONLY"), "query_syntax": (62, "SYNTAX_ERROR"),
    "query_empty": (62, "SYNTAX_ERROR"), "query_multiple": (62, "SYNTAX_ERROR"),
    "query_too_complex": (306, "TOO_DEEP_RECURSION"),
    "query_function_forbidden": (446, "FUNCTION_NOT_ALLOWED"),
    "query_too_large": (393, "QUERY_IS_TOO_LARGE"),
    "query_concurrency_limited": (202, "TOO_MANY_SIMULTANEOUS_QUERIES"),
    "unknown_format": (73, "UNKNOWN_FORMAT"), "unknown_database": (81, "UNKNOWN_DATABASE"),
    "not_supported": (48, "NOT_IMPLEMENTED"), "invalid_request": (36, "BAD_ARGUMENTS"),
}  # fmt: skip
_ENGINE_CODE = re.compile(r"^Code: (\d+)\. DB::Exception: ")
# after the text is stripped of trailing blanks and one ";" (two \s* around an optional ";"
# made a run of blanks after FORMAT cost its square: 45,000 spaces held the loop 7.8 s)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)$", re.IGNORECASE)
_QUERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # in binary data, never in SQL
# the text of an INSERT before its data: "... FORMAT name" and a line break
_DATA_AFTER = re.compile(rb"(.*?\bFORMAT\s+[A-Za-z][A-Za-z0-9_]*)[ \t]*\r?\n", re.S | re.I)


# -- reading a request ------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """What a request's URL parameters say: ``lower`` holds the client's own limits."""

    query: str = ""
    default_format: str | None = None
    query_id: str = ""
    lower: Mapping[str, int] | None = None
    protocol_version: int = 0


def _integer(name: str, value: str) -> int:
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 20):  # a UInt64 at most
        raise EndpointError(
            400,
            "invalid_request",
            f"setting {name} takes a non-negative integer, not {value[:40]!r}",
        )
    return int(value)


def parse_params(items: Iterable[tuple[str, str]], database: str) -> Params:
    """The parameters of one request (the last of a repeated name counts), or EndpointError:
    a setting that is not accepted, another database, ClickHouse's own compression."""
    params = dict(items)
    for name, value in params.items():
        if name.startswith("param_"):
            raise EndpointError(
                400, "not_supported", f"query parameters ({name}) are not supported: "
                "write the values into the query"
            )  # fmt: skip
        known = name in TRANSPORT_PARAMS | IGNORED_SETTINGS | LIMIT_SETTINGS
        if not known and not name.startswith(IGNORED_PREFIXES):
            raise EndpointError(
                400, "setting_readonly", f"Cannot modify '{name}' setting in readonly mode"
            )
        if name in ("compress", "decompress") and value not in ("", "0"):
            raise EndpointError(
                400, "not_supported", f"{name}=1 (ClickHouse's compressed blocks) is not "
                "supported: leave the answer uncompressed"
            )  # fmt: skip
    query_id = params.get("query_id") or str(uuid.uuid4())
    if not _QUERY_ID.fullmatch(query_id):  # it goes back in a header
        raise EndpointError(400, "invalid_request", "a query_id has at most 128 of [A-Za-z0-9._:-]")
    chosen = params.get("database", "")
    if chosen not in ("", "default", database):
        raise EndpointError(
            400, "unknown_database", f"Database {chosen} does not exist: this endpoint serves "
            f"{database!r} (unqualified tables are always read there)"
        )  # fmt: skip
    return Params(
        query=params.get("query", ""),
        default_format=params.get("default_format") or None,
        query_id=query_id,
        lower={n: _integer(n, v) for n, v in params.items() if n in LIMIT_SETTINGS},
        protocol_version=_integer(
            "client_protocol_version", params.get("client_protocol_version") or "0"
        ),
    )


def split_format(text: str) -> tuple[str, str | None]:
    """The statement and the name of its trailing ``FORMAT`` clause (clients append one); a
    FORMAT anywhere else stays in the statement, where the guard refuses it."""
    statement = text.rstrip()
    statement = statement.removesuffix(";").rstrip()
    found = _TRAILING_FORMAT.search(statement)
    if found is None:
        return text, None
    return statement[: found.start()].rstrip(), found.group(1)


def resolve_format(name: str) -> str:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise EndpointError(
            400, "unknown_format", f"Unknown output format {name}: use one of "
            + ", ".join(_FORMAT_NAMES)
        ) from None  # fmt: skip


def content_type(fmt: str) -> str:
    if fmt.startswith("TabSeparated"):
        kind = "text/tab-separated-values"
    elif fmt.startswith("CSV"):
        kind = "text/csv"
    elif fmt.startswith("JSON"):
        kind = "application/json"
    elif fmt == "XML":
        kind = "application/xml"
    elif fmt.startswith(_TEXT_FORMATS):
        kind = "text/plain"
    else:
        return "application/octet-stream"
    return f"{kind}; charset=UTF-8"


def capped(ours: Mapping[str, Any], lower: Mapping[str, int]) -> dict[str, Any]:
    """The settings one query runs with: the endpoint's, lowered where the client asks for
    less (0 is "no limit": it never replaces one of ours), ``readonly=1`` last."""
    settings = {name: value for name, value in ours.items() if name != "readonly"}
    for name, value in lower.items():
        mine = settings.get(name, 0)
        if value > 0 and (not mine or value < mine):
            settings[name] = value
    settings.update(HIDDEN)
    settings["readonly"] = 1
    return settings


def settings_clause(settings: Mapping[str, Any]) -> str:
    """Names and values are the endpoint's own or integers it parsed: nothing to escape."""
    return ", ".join(
        f"{name} = {value!r}" if isinstance(value, str) else f"{name} = {int(value)}"
        for name, value in settings.items()
    )


async def read_payload(request: Request, limit: int) -> tuple[bytes, int]:
    """The first ``limit`` bytes of the body and its size; past the limit the body is read and
    dropped up to ``DRAIN_BYTES``, so that a client sending an INSERT's data gets its answer."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > DRAIN_BYTES:  # not "²"
        return b"", int(declared)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if size < limit:
                chunks.append(chunk[: limit - size])
            size += len(chunk)
            if size > DRAIN_BYTES:
                break
    except ClientDisconnect as exc:
        raise EndpointError(400, "invalid_request", "the client went away") from exc
    return b"".join(chunks), size


def inflated(head: bytes, encoding: str, limit: int, whole: bool) -> bytes:
    """At most ``limit`` bytes of ``head`` decoded as its ``Content-Encoding`` says (clients
    compress the data of an INSERT). ``whole``: ``head`` is the whole body, so a stream that
    ends early is refused; else the start of a longer body decodes as far as it goes."""
    if encoding in ("", "identity"):
        return head[:limit]
    if encoding not in inflate.CODINGS:
        raise EndpointError(400, "not_supported", f"Content-Encoding {encoding} is not supported")
    inflater = inflate.Inflater(encoding, limit)
    try:
        inflater.feed(head)
        return inflater.finish() if whole else inflater.inflated
    except inflate.TooLarge:
        return inflater.inflated  # ``limit`` bytes: the caller tells SQL from an INSERT's data
    except inflate.Corrupt as exc:
        raise EndpointError(
            400, "invalid_request", f"the body is not {encoding} data: {exc}"
        ) from None


def statement_of(query: str, body: bytes, complete: bool) -> tuple[str, bool]:
    """ClickHouse's query text, the ``query`` parameter, a line break and the body, and False;
    or, when the body holds data (binary, or not ``complete`` within the limit), the text
    before the data (an INSERT's ``... FORMAT name`` line) and True."""
    if complete:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            text = "\0"
        if not _CONTROL.search(text):
            return (f"{query}\n{text}" if query and text else query or text), False
    found = _DATA_AFTER.match(body)
    if found is not None:
        head = found.group(1).decode(errors="replace")
        return (f"{query}\n{head}" if query else head), True
    if query:
        return query, True
    if complete:
        raise EndpointError(400, "invalid_request", "the query is not UTF-8 text")
    raise EndpointError(413, "query_too_large", f"send at most {MAX_SQL_BYTES} bytes of SQL")


# -- the handshakes ---------------------------------------------------------------------------


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rows_sql(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """SQL that answers ``rows`` (strings and integers) under ``columns``, reading no table."""
    cells = ", ".join(
        "tuple(" + ", ".join(_literal(v) if isinstance(v, str) else str(int(v)) for v in r) + ")"
        for r in rows
    )
    picked = ", ".join(f"tupleElement(__row, {i + 1}) AS `{c}`" for i, c in enumerate(columns))
    return f"SELECT {picked} FROM (SELECT arrayJoin([{cells}]) AS __row)"


def normalized(sql: str) -> str:
    return " ".join(sql.strip().rstrip(";").split()).lower()


# what clickhouse-connect's get_client() and clickhouse-go (Grafana's plugin) send on connect
HELLO = "select displayname(), version(), revision(), timezone()"  # clickhouse-go's
HANDSHAKES = {
    "select version(), timezone()": "SELECT version(), timezone()",
    "select timezone()": "SELECT timezone()",
    "select version()": "SELECT version()",
    "select currentdatabase()": "SELECT currentDatabase()",
    HELLO: f"SELECT {_literal(DISPLAY_NAME)} AS `displayName()`, version(), "
    "toUInt32(0) AS `revision()`, timezone()",  # the engine writes Native revision 0
    "select name, value, readonly from system.settings limit 10000": "settings",
    "select database, name from system.tables order by database, name": "tables",
}  # fmt: skip
# settings a client must not try to change (readonly 1): no compression, no progress headers
_FIXED_SETTINGS = (
    ("readonly", "1"), ("enable_http_compression", "0"), ("send_progress_in_http_headers", "0"),
    ("cancel_http_readonly_queries_on_client_close", "0"), ("date_time_input_format", "basic"),
)  # fmt: skip


# -- credentials ------------------------------------------------------------------------------


def clickhouse_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The JWT sent in one of ClickHouse's ways (HTTP basic password, ``X-ClickHouse-Key``),
    None when there is none of them (a bearer header, or none, is the shared backend's)."""
    if "password" in query:
        raise AuthenticationError(
            "send the JWT in a header (HTTP basic password or X-ClickHouse-Key), not in the URL",
            code="token_in_url",
        )
    key, authorization = headers.get("x-clickhouse-key"), headers.get("authorization")
    if key is not None:
        if authorization is not None:
            raise AuthenticationError(
                "send credentials one way: Authorization or X-ClickHouse-Key", "token_malformed"
            )
        if not key.strip():
            raise AuthenticationError("send the JWT as X-ClickHouse-Key", code="token_missing")
        return key.strip()
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError, a non-ASCII header
        raise AuthenticationError(
            "HTTP basic credentials are not base64 of user:password", code="token_malformed"
        ) from exc
    _, colon, password = decoded.partition(":")
    if not colon or not password.strip():
        raise AuthenticationError(
            "send the JWT as the HTTP basic password (any user name)", code="token_missing"
        )
    return password.strip()


class ClickHouseCredentials(BearerBackend):
    """The shared bearer backend; on ClickHouse's routes the JWT sent in one of ClickHouse's
    ways becomes the bearer header that backend reads (and the key header is dropped)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        path, asks = conn.url.path, conn.scope["method"] != "GET" or "query" in conn.query_params
        if path == "/ping" or (path == "/" and not asks):
            return None  # ClickHouse's liveness checks take no credentials
        if path in CLICKHOUSE_PATHS:
            token = clickhouse_token(conn.headers, conn.query_params)
            if token is not None:
                dropped = (b"authorization", b"x-clickhouse-key")
                headers = [(k, v) for k, v in conn.scope["headers"] if k.lower() not in dropped]
                conn.scope["headers"] = [*headers, (b"authorization", f"Bearer {token}".encode())]
                conn = HTTPConnection(conn.scope)
        return await super().authenticate(conn)


# -- answers ----------------------------------------------------------------------------------


def error_response(error: EndpointError) -> Response:
    """``error`` as ClickHouse writes one; the engine's own errors keep their code."""
    engine = _ENGINE_CODE.match(error.message)
    if engine is not None:
        number, body = int(engine.group(1)), error.message
    else:
        default = (344, "SUPPORT_IS_DISABLED") if error.code.startswith("query_") else (
            (36, "BAD_ARGUMENTS") if error.status < 500 else (1002, "UNKNOWN_EXCEPTION")
        )  # fmt: skip
        if error.code.startswith("token_"):
            default = (516, "AUTHENTICATION_FAILED")
        number, name = CLICKHOUSE_CODES.get(error.code, default)
        message = error.message.rstrip(". ")
        body = f"Code: {number}. DB::Exception: {message} [{error.code}]. ({name})"
    headers = {**(error.headers or {}), "X-ClickHouse-Exception-Code": str(number)}
    return PlainTextResponse(body + "\n", status_code=error.status, headers=headers)


def clickhouse_errors(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """Every failure of ``handler`` as ClickHouse's error: its refusals as they are, anything
    else as 503 (logged), never a 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except EndpointError as exc:
            return error_response(exc)
        except Exception:
            log.exception("ClickHouse interface failure on %s", request.url.path)
            return error_response(EndpointError(503, "unavailable", "the endpoint failed; retry"))

    return endpoint


def render(client: Any, sql: str, fmt: str, settings: Mapping[str, Any]) -> tuple[bytes, None]:
    """The engine's answer to prepared ``sql`` in ``fmt``, within ``settings`` (the row count
    is not known without decoding the answer)."""
    answer = client.raw_query(f"{sql}\nSETTINGS {settings_clause(settings)}\nFORMAT {fmt}")
    return bytes(answer or b""), None


def render_hello(
    client: Any, sql: str, settings: Mapping[str, Any], revision: int
) -> tuple[bytes, int]:
    """clickhouse-go's hello in the Native revision it sent (``native``'s docstring says why)."""
    answer, _ = render(client, sql, "TabSeparatedWithNamesAndTypes", settings)
    return native.block(answer, revision), 1


class ClickHouseHTTP:
    """The routes of ClickHouse's HTTP interface, on ``service``'s one query path."""

    def __init__(self, service: QueryService) -> None:
        self.service = service

    def routes(self) -> list[Route]:
        return [
            Route("/", clickhouse_errors(self.query), methods=["GET", "POST"]),
            Route("/ping", self.ping, methods=["GET", "HEAD"]),
        ]

    def authentication(self, verifier: TokenVerifier) -> Middleware:
        """The app's authentication: bearer JWTs everywhere, ClickHouse's ways on its routes."""
        backend = ClickHouseCredentials(verifier)
        return Middleware(AuthenticationMiddleware, backend=backend, on_error=self.refused)

    def refused(self, conn: HTTPConnection, error: Exception) -> Response:
        """A token refused: ClickHouse's 401 on its routes, the endpoint's JSON elsewhere."""
        assert isinstance(error, AuthenticationError)
        refusal = EndpointError(401, error.code, error.message)
        return error_response(refusal) if conn.url.path in CLICKHOUSE_PATHS else refusal.response()

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """The router's refusals (405 for PUT /, ...): ClickHouse's on its routes."""
        error = http_error(exc)
        clickhouse = request.url.path in CLICKHOUSE_PATHS | {"/ping"}
        return error_response(error) if clickhouse else error.response()

    async def ping(self, _: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def query(self, request: Request) -> Response:
        if request.method == "GET" and "query" not in request.query_params:
            return PlainTextResponse("Ok.\n")  # ClickHouse's health check
        started = time.perf_counter()
        asked, answer = await self.service.serve(request, partial(self._read, request))
        summary = {
            "result_bytes": str(len(answer)),
            "elapsed_ns": str(int((time.perf_counter() - started) * 1e9)),
        }
        headers = {
            "X-ClickHouse-Format": asked.fmt,
            "X-ClickHouse-Query-Id": asked.detail["query_id"],
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            "X-ClickHouse-Summary": orjson.dumps(summary).decode(),
        }
        return Response(answer, media_type=content_type(asked.fmt), headers=headers)

    async def _read(self, request: Request, scope: Scope) -> Asked:
        """One request as ClickHouse reads it; what runs is made by the guard (or is the
        handshake's fixed answer)."""
        encoding = request.headers.get("content-encoding", "").strip().lower()
        keep = MAX_SQL_BYTES if encoding in ("", "identity") else ENCODED_HEAD_BYTES
        head, size = await read_payload(request, keep)
        params = parse_params(request.query_params.multi_items(), self.service.database)
        body = inflated(head, encoding, MAX_SQL_BYTES + 1, whole=size <= keep)
        complete = size <= keep and len(body) <= MAX_SQL_BYTES
        text, data = statement_of(params.query, body, complete)
        if len(text.encode()) > MAX_SQL_BYTES:
            raise EndpointError(413, "query_too_large", f"send at most {MAX_SQL_BYTES} bytes")
        detail: dict[str, Any] = {"interface": "clickhouse_http", "query_id": params.query_id}
        if data:  # the data of an INSERT: refused by the guard, never read
            detail["data_bytes"] = size
        statement, named = split_format(text)
        fmt = resolve_format(named or params.default_format or "TabSeparated")
        settings = capped(self._ours(), params.lower or {})
        execute: Execute = partial(render, fmt=fmt, settings=settings)
        if not data and normalized(statement) in HANDSHAKES:
            detail["handshake"] = True
            del settings["max_result_rows"]  # a fixed answer of a few rows, no table's
            if normalized(statement) == HELLO and fmt == "Native" and params.protocol_version:
                execute = partial(render_hello, settings=settings, revision=params.protocol_version)
        prepare = self._refuse_data if data else self._prepare
        return Asked(statement, execute, prepare, fmt, {**detail, "format": fmt})

    def _ours(self) -> dict[str, Any]:
        service = self.service
        return query_settings(service.max_rows, service.timeout_s, service.limits)

    def _prepare(self, sql: str, scope: Scope) -> str:
        """The SQL to run: a handshake's fixed answer, or what the guard makes of ``sql``."""
        answer = HANDSHAKES.get(normalized(sql))
        if answer == "settings":
            limits = [(n, str(v), 0) for n, v in self._ours().items() if n in LIMIT_SETTINGS]
            fixed = [(name, value, 1) for name, value in _FIXED_SETTINGS]
            return rows_sql(("name", "value", "readonly"), limits + fixed)
        if answer == "tables":
            database = self.service.database
            return rows_sql(("database", "name"), [(database, t) for t in sorted(scope.tables)])
        return answer or guard(sql, scope, self.service.database)

    def _refuse_data(self, sql: str, scope: Scope) -> str:
        """A query with data after it: only INSERT takes data, and the guard refuses it."""
        guard(sql, scope, self.service.database)
        raise QueryRejected(
            "query_syntax", "data after the query: only INSERT takes data, and it is not allowed"
        )
