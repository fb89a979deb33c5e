"""How operator tools reach the hot store.

A ClickHouse server: directly. The embedded engine: directly when no process holds it, else
through the ClickHouse sink's query endpoint with an auditor token (``--token``, or minted from
the local keyring on a development stack). Reads only; writers (``replay cold``) need direct
access and say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.client import EngineBusy, connect


class HotUnavailable(RuntimeError):
    """Neither the engine nor the sink's endpoint answered."""


Reader = Callable[[str], list[dict[str, Any]]]


def quote(value: str) -> str:
    """A ClickHouse string literal, for SQL the tools build around ids and names."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def local_token(tenant: str, role: str, ttl_s: int = 600) -> str:
    from producers.auth import Keyring, issue_token
    from sealstream.cli.gateway import auth_settings

    auth = auth_settings()
    return issue_token(
        Keyring.from_settings(auth), auth, f"local-{role}", tenant, ["query"], [role], ttl_s
    )


def direct_reader(client: Any, database: str) -> Reader:
    """SQL with ``{db}.`` table prefixes -> rows as dicts, on a clickhouse-connect client."""

    def read(sql: str) -> list[dict[str, Any]]:
        result = client.query(sql.replace("{db}.", f"{database}."))
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    return read


def endpoint_rows(url: str, token: str, sql: str, timeout_s: float = 60) -> list[list[Any]]:
    """Rows of one query through a query endpoint (``.../v1/query``); HTTP errors raise."""
    response = httpx.post(
        url,
        json={"sql": sql, "format": "json"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout_s,
    )
    response.raise_for_status()
    return list(response.json()["rows"])


def hot_reader(settings: ClickHouseSettings, token: str | None = None) -> tuple[Reader, str]:
    """(run SQL -> rows as dicts, description). SQL names tables unqualified when it goes
    through the endpoint and qualified otherwise: use ``{db}`` in it."""
    try:
        client = connect(settings)  # tables are qualified: the database may not exist yet
    except EngineBusy:
        client = None
    if client is not None:
        return direct_reader(client, settings.database), settings.dsn
    url = f"http://{settings.query_host}:{settings.query_port}/v1/query"
    bearer = token or local_token("*", "auditor")

    def endpoint(sql: str) -> list[dict[str, Any]]:
        try:
            response = httpx.post(
                url,
                json={"sql": sql.replace("{db}.", ""), "format": "json"},
                headers={"Authorization": f"Bearer {bearer}"},
                timeout=settings.query_timeout_s + 30,
            )
        except httpx.TransportError as exc:
            raise HotUnavailable(
                f"the ClickHouse sink's endpoint {url} is unreachable: {exc}"
            ) from exc
        body = response.json()
        if response.status_code != 200:
            error = body.get("error", {})
            raise HotUnavailable(
                f"{response.status_code} {error.get('code')}: {error.get('message')}"
            )
        return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]

    return endpoint, url
