"""The embedded engine's query endpoint, served by the ClickHouse sink process.

chDB opens its data directory in one process only, so in embedded mode the sink is the only
process that can read the hot store; it serves ``POST /v1/query`` for ``sealstream query``,
ClickHouse's HTTP interface on ``/`` for analysts' tools (``http_protocol``; both take the one
path of ``QueryService.serve``) and ``GET /v1/audit/{event_id}`` for auditors. Callers present
a JWT (the gateway's keyring): the ``analyst`` role with the ``analytics:read`` scope queries
its own tenant's rows, the ``auditor`` role with ``audit:read`` every tenant's. Every query,
refused or run, is an audit record on ``audit.decisions`` before any row is returned.

Queries run concurrently on a small pool of engine handles (one chDB handle runs one query at
a time; several handles on the one engine run in parallel). ``Admission`` bounds them: a few
at once per tenant (auditors: per subject), a bounded total, a short wait for a slot and then
429 with ``Retry-After``, so one tenant's slow queries never hold up another's. Bodies are read
as a stream and refused with 413 as soon as they pass ``MAX_SQL_BYTES``. Every failure is JSON
``{"error": {"code", "message", "field"?}}`` with a 4xx, or 503 when retrying may help
(ClickHouse's routes: ClickHouse's own error text).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import math
import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from clickhouse_connect.driver.exceptions import Error as ClickHouseError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sealstream.auth import (
    AuthenticationError,
    Principal,
    TokenVerifier,
    principal_of,
)
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.access import direct_reader
from sinks.clickhouse.query import QueryRejected, Scope, analyst, guard, operator
from sinks.clickhouse.running import QueryLimits, QueryResult, run

log = logging.getLogger("sealstream.sink.query")

QUERIES = Counter(
    "sealstream_analyst_queries_total", "Analyst queries by outcome", ["tenant", "outcome"]
)
QUERY_SECONDS = Histogram("sealstream_analyst_query_seconds", "Analyst query time")
RUNNING = Gauge("sealstream_analyst_queries_running", "Queries running on the engine now")

ANALYST_ROLE = "analyst"
AUDITOR_ROLE = "auditor"
ANALYST_SCOPE = "analytics:read"  # config/policy.yaml: action_scopes.query
AUDITOR_SCOPE = "audit:read"  # config/policy.yaml: action_scopes.read_audit
MAX_SQL_BYTES = 64 * 1024
# ClickHouse error codes of a query stopped by its limits (rows, time, memory, bytes)
LIMIT_CODES = {158, 159, 160, 241, 307, 396}

# "current rows: 1.24 thousand" of a read limit counts what was read before the tenant filter
# (whole granules, other tenants' rows among them): the caller is told the limit, not that
_READ_SO_FAR = re.compile(r", current (?:rows|bytes): [0-9.]+(?: [A-Za-z]+)?")

Audit = Callable[..., None]
Trail = Callable[[Callable[[str], list[dict[str, Any]]], str, bool], dict[str, Any] | None]
Execute = Callable[[Any, str], tuple[Any, int | None]]  # (handle, safe SQL) -> (result, rows)


@dataclass(frozen=True)
class Asked:
    """A query as its route read it: ``sql`` as sent, what ``prepare`` makes of it (default:
    the guard) runs by ``execute`` on a pooled handle; ``detail`` goes into its audit record."""

    sql: str
    execute: Execute
    prepare: Callable[[str, Scope], str] | None = None
    fmt: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def audited(self) -> dict[str, Any]:
        # all of it (at most MAX_SQL_BYTES): a cut text could hide what a query read behind
        # a long comment
        return {**self.detail, "sql": self.sql}


class EndpointError(Exception):
    """A request this endpoint refuses or cannot serve, as the JSON error it answers with."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.headers = field, headers

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def access_for(principal: Principal, audit_only: bool = False) -> Scope:
    """What ``principal`` may read (the role and its scope, as the gateway's policy names
    them), or EndpointError 403. ``audit_only``: the audit trail, auditors only."""
    roles, scopes = principal.roles, principal.scopes
    if AUDITOR_ROLE in roles and AUDITOR_SCOPE in scopes:
        return operator()
    if not audit_only and ANALYST_ROLE in roles and ANALYST_SCOPE in scopes:
        return analyst(principal.tenant)
    if AUDITOR_ROLE in roles:
        raise EndpointError(
            403, "scope_required", f"the auditor role needs the {AUDITOR_SCOPE!r} scope"
        )
    if audit_only:
        raise EndpointError(403, "role_required", "the audit trail needs the 'auditor' role")
    if ANALYST_ROLE in roles:
        raise EndpointError(
            403, "scope_required", f"the analyst role needs the {ANALYST_SCOPE!r} scope"
        )
    raise EndpointError(403, "role_required", "queries need the 'analyst' or 'auditor' role")


def to_csv(columns: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


async def read_body(request: Request, limit: int = MAX_SQL_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (a declared
    Content-Length before reading, a chunked body at the chunk that crosses it)."""
    too_large = EndpointError(413, "query_too_large", f"send at most {limit} bytes of SQL")
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.strip().isascii() and length.strip().isdigit()):  # "²" is a digit
            raise EndpointError(400, "invalid_request", "Content-Length is not a number")
        if int(length) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise EndpointError(400, "invalid_request", "the client went away") from exc
    return b"".join(chunks)


class ClientPool:
    """Engine handles for concurrent queries. One chDB handle runs one call at a time (the
    driver locks it), several handles on the one engine run in parallel; handles are opened
    on demand up to ``size`` with ``factory``."""

    def __init__(self, first: Any, size: int, factory: Callable[[], Any] | None) -> None:
        self.size = size if factory is not None else 1
        self._factory = factory
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._idle.put(first)
        self._opened = 1
        self._lock = threading.Lock()

    @contextmanager
    def client(self, wait_s: float = 30) -> Iterator[Any]:
        handle = self._take(wait_s)
        try:
            yield handle
        finally:
            self._idle.put(handle)

    def _take(self, wait_s: float) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            opening = self._factory is not None and self._opened < self.size
            if opening:
                self._opened += 1
        if opening:
            assert self._factory is not None
            try:
                return self._factory()
            except Exception as exc:  # the engine refused another handle: use the ones open
                with self._lock:
                    self._opened -= 1
                    self.size = self._opened
                log.warning("cannot open another engine handle (%s); using %d", exc, self.size)
        try:
            return self._idle.get(timeout=wait_s)
        except queue.Empty as exc:
            raise EndpointError(503, "engine_busy", "no engine handle is free; retry") from exc


def chdb_siblings(client: Any) -> Callable[[], Any] | None:
    """A factory of more handles on ``client``'s embedded engine (None for other clients)."""
    uri = str(getattr(client, "uri", ""))
    if not uri.startswith("chdb://"):
        return None
    import clickhouse_connect

    database = getattr(client, "database", None)
    return lambda: clickhouse_connect.get_client(dsn=uri, database=database)


class Admission:
    """Query slots: ``per_key`` at once per tenant (or auditor), ``total`` at once overall; a
    query waits at most ``wait_s`` (``depth`` waiting per key) and is then refused with 429."""

    def __init__(self, per_key: int, total: int, wait_s: float, depth: int) -> None:
        self.per_key, self.total, self.wait_s, self.depth = per_key, total, wait_s, depth
        self.retry_after = str(max(1, math.ceil(wait_s)))
        self._running: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._busy = 0
        self._changed = asyncio.Condition()

    def waiting(self, key: str) -> int:
        """How many queries of ``key`` wait for a slot now."""
        return self._waiting.get(key, 0)

    def _free(self, key: str) -> bool:
        return self._busy < self.total and self._running.get(key, 0) < self.per_key

    def _refuse(self, key: str) -> EndpointError:
        return EndpointError(
            429,
            "query_concurrency_limited",
            f"{self._running.get(key, 0)} queries of yours are running; retry in "
            f"{self.retry_after} s",
            headers={"Retry-After": self.retry_after},
        )

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        async with self._changed:
            if not self._free(key):
                if self._waiting.get(key, 0) >= self.depth:
                    raise self._refuse(key)
                self._waiting[key] = self._waiting.get(key, 0) + 1
                try:
                    while not self._free(key):
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            raise self._refuse(key)
                        with contextlib.suppress(TimeoutError):  # checked again above
                            await asyncio.wait_for(self._changed.wait(), remaining)
                finally:
                    self._waiting[key] -= 1
                    if not self._waiting[key]:
                        del self._waiting[key]
            self._running[key] = self._running.get(key, 0) + 1
            self._busy += 1
        try:
            yield
        finally:
            async with self._changed:
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]
                self._busy -= 1
                self._changed.notify_all()


@dataclass
class QueryService:
    """The endpoint's state and its requests (routes in ``create_query_app``)."""

    pool: ClientPool
    admission: Admission
    verifier: TokenVerifier
    audit: Audit
    database: str
    max_rows: int
    timeout_s: int
    limits: QueryLimits
    health: Callable[[], dict[str, Any]] | None = None
    trail: Trail | None = None

    def _principal(self, request: Request) -> Principal:
        """The caller, verified by the shared backend the app installs; 401 without one."""
        try:
            return principal_of(request)
        except AuthenticationError as exc:
            raise EndpointError(401, exc.code, exc.message) from exc

    async def _record(self, principal: Principal, request: Request, **record: Any) -> None:
        agent = request.headers.get("user-agent")
        await run_in_threadpool(
            self.audit,
            subject=principal.subject,
            tenant=principal.tenant,
            client_ip=request.client.host if request.client else None,
            user_agent=agent[:256] if agent else None,
            **record,
        )

    async def _deny(
        self, principal: Principal, request: Request, action: str, reason: str, detail: Any
    ) -> None:
        """Record a refusal; if the record fails, the refusal stands all the same (it returns
        no rows)."""
        try:
            await self._record(
                principal, request, action=action, allow=False, reason=reason, detail=detail
            )
        except Exception as exc:
            log.error("audit record for a refusal failed: %s", exc)

    async def _access(
        self, principal: Principal, request: Request, action: str, detail: dict[str, Any]
    ) -> Scope:
        """The caller's scope, or its refusal recorded and raised."""
        try:
            return access_for(principal, audit_only=action == "audit_lookup")
        except EndpointError as exc:
            reason = "DENY_SCOPE" if exc.code == "scope_required" else "DENY_ROLE"
            roles, scopes = sorted(principal.roles), sorted(principal.scopes)
            await self._deny(
                principal, request, action, reason, {**detail, "roles": roles, "scopes": scopes}
            )
            if action == "query":
                QUERIES.labels(principal.tenant, "denied").inc()
            raise

    @staticmethod
    def slot_key(principal: Principal) -> str:
        if AUDITOR_ROLE in principal.roles and AUDITOR_SCOPE in principal.scopes:
            return f"auditor:{principal.subject}"
        return f"tenant:{principal.tenant}"

    async def serve(
        self, request: Request, read: Callable[[Scope], Awaitable[Asked]]
    ) -> tuple[Asked, Any]:
        """The one path of every query route: the caller's access, ``read`` (the route's way
        of reading its request), a slot, the guard, the engine, the audit record; the route
        renders the result."""
        principal = self._principal(request)
        scope = await self._access(principal, request, "query", {})
        try:
            asked = await read(scope)
        except EndpointError as exc:  # a setting, format, body... refused: recorded too
            refused = {"code": exc.code, "error": exc.message[:2000], "path": request.url.path}
            if "query" in request.query_params:
                refused["sql"] = request.query_params["query"][:MAX_SQL_BYTES]
            await self._deny(principal, request, "query", "QUERY_REJECTED", refused)
            QUERIES.labels(principal.tenant, "rejected").inc()
            raise
        try:
            async with self.admission.slot(self.slot_key(principal)):
                result, rows, elapsed_ms = await self._guarded(principal, request, scope, asked)
        except EndpointError as exc:
            if exc.status == 429:  # refused too: recorded as every refusal is
                await self._deny(principal, request, "query", "QUERY_LIMITED", asked.audited())
                QUERIES.labels(principal.tenant, "limited").inc()
            raise
        detail = {**asked.audited(), "rows": rows, "elapsed_ms": elapsed_ms}
        try:
            await self._record(
                principal, request, action="query", allow=True, reason="QUERY_OK", detail=detail
            )
        except Exception as exc:  # no audit record, no answer
            log.error("audit record for a query failed: %s", exc)
            raise EndpointError(
                503, "audit_unavailable", "the audit trail cannot be written; retry"
            ) from exc
        QUERIES.labels(principal.tenant, "ok").inc()
        return asked, result

    async def query(self, request: Request) -> Response:
        """``POST /v1/query``: JSON ``{"sql", "format"}`` in, JSON or CSV out."""

        async def read(_: Scope) -> Asked:
            sql, fmt = _payload(await read_body(request))
            return Asked(sql, self._rows, fmt=fmt)

        asked, result = await self.serve(request, read)
        if asked.fmt == "csv":
            return PlainTextResponse(to_csv(result.columns, result.rows), media_type="text/csv")
        return Response(_json(result.as_dict()), media_type="application/json")

    def _rows(self, client: Any, sql: str) -> tuple[QueryResult, int]:
        result = run(client, sql, self.max_rows, self.timeout_s, self.limits)
        return result, len(result.rows)

    async def _guarded(
        self, principal: Principal, request: Request, scope: Scope, asked: Asked
    ) -> tuple[Any, int | None, float]:
        try:
            prepare = asked.prepare or partial(guard, database=self.database)
            safe = await run_in_threadpool(prepare, asked.sql, scope)
        except QueryRejected as exc:
            detail = {**asked.audited(), "code": exc.code}
            await self._deny(principal, request, "query", "QUERY_REJECTED", detail)
            QUERIES.labels(principal.tenant, "rejected").inc()
            raise EndpointError(400, exc.code, str(exc), "sql") from exc
        started = time.perf_counter()
        try:
            result, rows = await run_in_threadpool(self._run, asked.execute, safe)
        except ClickHouseError as exc:  # ClickHouse's own refusals: unknown column, limits, ...
            message = _READ_SO_FAR.sub("", str(exc).split("(version")[0].strip()[:2000])
            found = re.search(r"Code: (\d+)", message)
            if found is None:  # no answer from the engine at all
                raise await self._unanswered(principal, request, asked, message) from exc
            detail = {**asked.audited(), "error": message}
            await self._deny(principal, request, "query", "QUERY_FAILED", detail)
            QUERIES.labels(principal.tenant, "failed").inc()
            code = "query_limit_exceeded" if int(found.group(1)) in LIMIT_CODES else "query_failed"
            raise EndpointError(400, code, message, "sql") from exc
        except EndpointError:  # ours, before the engine had the query (no handle free)
            raise
        except Exception as exc:  # the engine (or its client) broke under the query
            raise await self._unanswered(principal, request, asked, repr(exc)) from exc
        finally:
            QUERY_SECONDS.observe(time.perf_counter() - started)
        return result, rows, round((time.perf_counter() - started) * 1000, 3)

    async def _unanswered(
        self, principal: Principal, request: Request, asked: Asked, why: str
    ) -> EndpointError:
        """A query the engine took and did not answer is audited too (it may have run)."""
        log.error("query failed without an answer from the engine: %s", why)
        detail = {**asked.audited(), "error": "the engine did not answer"}
        await self._deny(principal, request, "query", "QUERY_FAILED", detail)
        QUERIES.labels(principal.tenant, "failed").inc()
        return EndpointError(503, "engine_unavailable", "the engine did not answer; retry")

    def _run(self, execute: Execute, sql: str) -> tuple[Any, int | None]:
        with self.pool.client() as client:
            RUNNING.inc()
            try:
                return execute(client, sql)
            finally:
                RUNNING.dec()

    def read(self, sql: str) -> list[dict[str, Any]]:
        """The audit trail's reads (SQL with ``{db}.`` prefixes), on a pooled handle."""
        with self.pool.client() as client:
            return direct_reader(client, self.database)(sql)

    async def audit_lookup(self, request: Request) -> Response:
        principal = self._principal(request)
        event_id = request.path_params["event_id"]
        await self._access(principal, request, "audit_lookup", {"event_id": event_id})
        await self._record(
            principal,
            request,
            action="audit_lookup",
            allow=True,
            reason="AUDIT_OK",
            detail={"event_id": event_id},
        )
        if self.trail is None:
            raise EndpointError(404, "not_configured", "this process serves no audit trail")
        # ?source=store: read ClickHouse itself instead of the sink's audit index
        from_store = request.query_params.get("source") == "store"
        async with self.admission.slot(self.slot_key(principal)):
            found = await run_in_threadpool(self.trail, self.read, event_id, from_store)
        if found is None:
            raise EndpointError(404, "event_not_found", f"no stored event {event_id!r}", "event_id")
        return Response(_json(found), media_type="application/json")

    async def healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "ok", **(self.health() if self.health else {})})

    async def metrics(self, _: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _payload(body: bytes) -> tuple[str, str]:
    try:
        payload = orjson.loads(body)
        sql = payload["sql"]
        fmt = payload.get("format", "json")
        if not isinstance(sql, str) or fmt not in ("json", "csv"):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EndpointError(
            400, "invalid_request", 'send JSON {"sql": "...", "format": "json"|"csv"}', "sql"
        ) from exc
    return sql, fmt


def _json_errors(
    handler: Callable[[Request], Any],
) -> Callable[[Request], Any]:
    """Every failure of ``handler`` as a JSON error: its refusals as they are, anything else
    as 503 (logged), never a 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except EndpointError as exc:
            return exc.response()
        except Exception:
            log.exception("query endpoint failure on %s", request.url.path)
            return EndpointError(503, "unavailable", "the query endpoint failed; retry").response()

    return endpoint


def http_error(exc: Exception) -> EndpointError:
    """The router's own refusals (404, 405) as this endpoint's errors."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "invalid_request")
    detail = exc.detail if isinstance(exc, HTTPException) else "bad request"
    return EndpointError(status if status < 500 else 503, code, str(detail))


def create_query_app(
    client: Any,
    lock: threading.Lock | None,
    verifier: TokenVerifier,
    audit: Audit,
    database: str,
    max_rows: int,
    timeout_s: int,
    health: Callable[[], dict[str, Any]] | None = None,
    trail: Trail | None = None,
    *,
    settings: ClickHouseSettings | None = None,
    clients: Callable[[], Any] | None = None,
) -> Starlette:
    """``client`` is this process's clickhouse-connect client; more handles on its engine come
    from ``clients`` (default: siblings of an embedded client). ``lock`` is not used: each
    pooled handle serves one query at a time. ``settings`` gives the limits and the concurrency
    (default: ``ClickHouseSettings()`` from the environment, as the sink loaded them)."""
    del lock
    config = settings or ClickHouseSettings()
    service = QueryService(
        pool=ClientPool(client, config.query_max_concurrent, clients or chdb_siblings(client)),
        admission=Admission(
            config.query_max_concurrent_per_tenant,
            config.query_max_concurrent,
            config.query_queue_timeout_s,
            config.query_queue_depth,
        ),
        verifier=verifier,
        audit=audit,
        database=database,
        max_rows=max_rows,
        timeout_s=timeout_s,
        limits=QueryLimits.from_settings(config),
        health=health,
        trail=trail,
    )
    from sinks.clickhouse.http_protocol import ClickHouseHTTP  # it builds on this module

    clickhouse = ClickHouseHTTP(service)  # ClickHouse's HTTP interface, on "/"
    app = Starlette(
        routes=[
            Route("/v1/query", _json_errors(service.query), methods=["POST"]),
            Route("/v1/audit/{event_id}", _json_errors(service.audit_lookup)),
            Route("/healthz", _json_errors(service.healthz)),
            Route("/metrics", _json_errors(service.metrics)),
            *clickhouse.routes(),
        ],
        exception_handlers={HTTPException: clickhouse.http_error},  # ClickHouse's on its routes
        middleware=[clickhouse.authentication(verifier)],  # JWTs, as bearer or ClickHouse's
    )
    app.state.query_service = service
    return app


def _json(value: Any) -> bytes:
    # orjson: datetimes, decimals (str) and numpy-free rows straight to bytes
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
