"""``sealstream query``: one analyst query, read-only, tenant-scoped and audited.

Embedded mode goes through the ClickHouse sink's query endpoint, which guards, scopes and
audits it; with a ClickHouse server the query runs directly, guarded and scoped the same way
(sinks/clickhouse/query.py) and recorded in the audit trail as the local operator.
"""

from __future__ import annotations

from typing import Any

from ops.errors import Refused, Unreachable, UsageError
from ops.settings import Settings

ENDPOINT_WAIT_S = 30  # for a sink its supervisor is restarting
LOCAL_TOKEN_TTL_S = 300
SQL_RECORDED = 4000  # characters of the query kept in its audit record


def query(
    settings: Settings,
    sql: str,
    token: str | None = None,
    tenant: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """The result (columns, rows, row_count, elapsed_ms) of one SELECT. ``token``: a JWT with
    the analyst (or auditor) role; without one, ``tenant`` mints a local analyst token (dev
    stack) or, on a server, scopes the query to that tenant."""
    if settings.clickhouse.embedded or endpoint:
        return _through_endpoint(settings, sql, token, tenant, endpoint)
    return _on_server(settings, sql, tenant)


def _local_analyst_token(settings: Settings, tenant: str) -> str:
    from sealstream.auth import Keyring, issue_token

    auth = settings.token_auth
    return issue_token(
        Keyring.from_settings(auth),
        auth,
        "local-analyst",
        tenant,
        ["analytics:read"],
        ["analyst"],
        LOCAL_TOKEN_TTL_S,
    )


def _through_endpoint(
    settings: Settings,
    sql: str,
    token: str | None,
    tenant: str | None,
    endpoint: str | None,
) -> dict[str, Any]:
    from sinks.clickhouse.access import HotUnavailable, endpoint_call

    if token is None:
        if tenant is None:
            raise UsageError("give --token (a JWT with the analyst role) or --tenant (dev stack)")
        token = _local_analyst_token(settings, tenant)
    clickhouse = settings.clickhouse
    url = endpoint or f"http://{clickhouse.query_host}:{clickhouse.query_port}/v1/query"
    try:
        response = endpoint_call(
            "POST",
            url,
            token,
            wait_s=ENDPOINT_WAIT_S,
            timeout_s=clickhouse.query_timeout_s + 10,
            json={"sql": sql, "format": "json"},
        )
    except HotUnavailable as exc:
        raise Unreachable(f"{exc}; is `sealstream sink clickhouse` running?") from exc
    body = response.json()
    if response.status_code != 200:
        error = body.get("error", {})
        raise Refused(f"{response.status_code} {error.get('code')}: {error.get('message')}")
    return dict(body)


def _on_server(settings: Settings, sql: str, tenant: str | None) -> dict[str, Any]:
    """The query on a ClickHouse server, guarded and scoped like the endpoint's, and its
    allow or deny decision recorded as the local operator's."""
    from schemas.audit import AuditLog, local_operator
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.query import QueryRejected, analyst, guard, operator
    from sinks.clickhouse.running import QueryLimits, run

    clickhouse = settings.clickhouse
    scope = analyst(tenant) if tenant else operator()
    audit = AuditLog(settings.kafka, settings.registry)
    who = local_operator()
    try:
        safe = guard(sql, scope, clickhouse.database)
    except QueryRejected as exc:
        audit.record(
            subject=who,
            tenant=tenant or "*",
            action="query",
            allow=False,
            reason="QUERY_REJECTED",
            detail={"sql": sql[:SQL_RECORDED], "code": exc.code},
        )
        raise Refused(f"{exc.code}: {exc}") from exc
    result = run(
        connect(clickhouse, database=clickhouse.database),
        safe,
        clickhouse.query_max_rows,
        clickhouse.query_timeout_s,
        limits=QueryLimits.from_settings(clickhouse),
    )
    audit.record(
        subject=who,
        tenant=tenant or "*",
        action="query",
        allow=True,
        reason="QUERY_OK",
        detail={"sql": sql[:SQL_RECORDED], "rows": len(result.rows)},
    )
    return result.as_dict()
