"""The embedded engine's query endpoint, served by the ClickHouse sink process.

chDB opens its data directory in one process only, so in embedded mode the sink is the only
process that can read the hot store; it serves ``POST /v1/query`` for ``sealstream query`` and
for analysts' tools. Callers present a JWT (the gateway's keyring) with the ``analyst`` role
(their tenant only) or the ``auditor`` role (every tenant). Every query, refused or run, is an
audit record on ``audit.decisions`` before any row is returned.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from producers.app import bearer_token
from producers.auth import Principal, TokenVerifier
from producers.errors import AuthenticationError
from sinks.clickhouse.access import direct_reader
from sinks.clickhouse.query import QueryRejected, Scope, analyst, guard, operator, run

log = logging.getLogger("sealstream.sink.query")

QUERIES = Counter(
    "sealstream_analyst_queries_total", "Analyst queries by outcome", ["tenant", "outcome"]
)
QUERY_SECONDS = Histogram("sealstream_analyst_query_seconds", "Analyst query time")

ANALYST_ROLE = "analyst"
AUDITOR_ROLE = "auditor"
MAX_SQL_BYTES = 64 * 1024

Audit = Callable[..., None]


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return JSONResponse({"error": error}, status_code=status)


def scope_for(principal: Principal) -> Scope | None:
    if AUDITOR_ROLE in principal.roles:
        return operator()
    if ANALYST_ROLE in principal.roles:
        return analyst(principal.tenant)
    return None


def to_csv(columns: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def create_query_app(
    client: Any,
    lock: threading.Lock,
    verifier: TokenVerifier,
    audit: Audit,
    database: str,
    max_rows: int,
    timeout_s: int,
    health: Callable[[], dict[str, Any]] | None = None,
    trail: Callable[[Callable[[str], list[dict[str, Any]]], str, bool], dict[str, Any] | None]
    | None = None,
) -> Starlette:
    """``client`` is this process's clickhouse-connect client; ``lock`` serializes its use."""

    async def query(request: Request) -> Response:
        try:
            principal = verifier.verify(bearer_token(request))
        except AuthenticationError as exc:
            return _error(401, exc.code, exc.message)
        peer = request.client.host if request.client else None
        agent = request.headers.get("user-agent")

        async def record(allow: bool, reason: str, detail: dict[str, Any]) -> None:
            # Kafka acknowledges in a few ms; off the event loop all the same.
            await run_in_threadpool(
                audit,
                subject=principal.subject,
                tenant=principal.tenant,
                action="query",
                allow=allow,
                reason=reason,
                detail=detail,
                client_ip=peer,
                user_agent=agent[:256] if agent else None,
            )

        scope = scope_for(principal)
        body = await request.body()
        if scope is None:
            await record(False, "DENY_ROLE", {"roles": sorted(principal.roles)})
            QUERIES.labels(principal.tenant, "denied").inc()
            return _error(403, "role_required", "queries need the 'analyst' or 'auditor' role")
        if len(body) > MAX_SQL_BYTES:
            return _error(413, "query_too_large", f"send at most {MAX_SQL_BYTES} bytes of SQL")
        try:
            payload = await request.json()
            sql = payload["sql"]
            fmt = payload.get("format", "json")
            if not isinstance(sql, str) or fmt not in ("json", "csv"):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _error(
                400, "invalid_request", 'send JSON {"sql": "...", "format": "json"|"csv"}', "sql"
            )
        try:
            safe = guard(sql, scope, database)
        except QueryRejected as exc:
            await record(False, "QUERY_REJECTED", {"sql": sql[:4000], "code": exc.code})
            QUERIES.labels(principal.tenant, "rejected").inc()
            return _error(400, exc.code, str(exc), "sql")
        started = time.perf_counter()
        try:
            result = await run_in_threadpool(_locked_run, lock, client, safe, max_rows, timeout_s)
        except Exception as exc:  # ClickHouse's own errors (unknown column, limits, ...)
            message = str(exc).split("(version")[0].strip()[:2000]
            await record(False, "QUERY_FAILED", {"sql": sql[:4000], "error": message})
            QUERIES.labels(principal.tenant, "failed").inc()
            return _error(400, "query_failed", message, "sql")
        finally:
            QUERY_SECONDS.observe(time.perf_counter() - started)
        try:
            await record(
                True,
                "QUERY_OK",
                {"sql": sql[:4000], "rows": len(result.rows), "elapsed_ms": result.elapsed_ms},
            )
        except Exception as exc:  # no audit record, no answer
            log.error("audit record for a query failed: %s", exc)
            return _error(503, "audit_unavailable", "the audit trail cannot be written; retry")
        QUERIES.labels(principal.tenant, "ok").inc()
        if fmt == "csv":
            return PlainTextResponse(to_csv(result.columns, result.rows), media_type="text/csv")
        return Response(_json(result.as_dict()), media_type="application/json")

    unlocked = direct_reader(client, database)

    def read(sql: str) -> list[dict[str, Any]]:
        with lock:  # one chDB handle: one query at a time
            return unlocked(sql)

    async def audit_lookup(request: Request) -> Response:
        try:
            principal = verifier.verify(bearer_token(request))
        except AuthenticationError as exc:
            return _error(401, exc.code, exc.message)
        event_id = request.path_params["event_id"]
        allowed = AUDITOR_ROLE in principal.roles
        await run_in_threadpool(
            audit,
            subject=principal.subject,
            tenant=principal.tenant,
            action="audit_lookup",
            allow=allowed,
            reason="AUDIT_OK" if allowed else "DENY_ROLE",
            detail={"event_id": event_id},
        )
        if not allowed:
            return _error(403, "role_required", "the audit trail needs the 'auditor' role")
        if trail is None:
            return _error(404, "not_configured", "this process serves no audit trail")
        # ?source=store: read ClickHouse itself instead of the sink's audit index
        from_store = request.query_params.get("source") == "store"
        found = await run_in_threadpool(trail, read, event_id, from_store)
        if found is None:
            return _error(404, "event_not_found", f"no stored event {event_id!r}", "event_id")
        return Response(_json(found), media_type="application/json")

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", **(health() if health else {})})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/v1/query", query, methods=["POST"]),
            Route("/v1/audit/{event_id}", audit_lookup),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ]
    )


def _locked_run(lock: threading.Lock, client: Any, sql: str, max_rows: int, timeout: int) -> Any:
    with lock:  # one chDB handle: one query at a time
        return run(client, sql, max_rows, timeout)


def _json(value: Any) -> bytes:
    # orjson: datetimes, decimals (str) and numpy-free rows straight to bytes
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
