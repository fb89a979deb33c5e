"""How operator tools reach the hot store.

A ClickHouse server: directly. The embedded engine: directly only when no ClickHouse sink and no
``sealstream up`` claims it (``open_hot``), else through the sink's query endpoint with an
auditor token (``--token``, or minted from the local keyring on a development stack). Reads
only; writers (``replay cold``, ``clickhouse migrate``) need the engine itself and say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import httpx

from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.client import EngineBusy, connect, engine_dir, reserve


class HotUnavailable(RuntimeError):
    """Neither the engine nor the sink's endpoint answered."""


Reader = Callable[[str], list[dict[str, Any]]]


def quote(value: str) -> str:
    """A ClickHouse string literal, for SQL the tools build around ids and names."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def local_token(tenant: str, role: str, ttl_s: int = 600) -> str:
    """A token from the local keyring with ``role`` and the scope that role reads with."""
    from sealstream.auth import Keyring, auth_settings, issue_token

    # the scope each reading role needs (config/policy.yaml: action_scopes query, read_audit)
    scopes = {"analyst": ["analytics:read"], "auditor": ["audit:read"]}.get(role, [])
    auth = auth_settings()
    return issue_token(
        Keyring.from_settings(auth), auth, f"local-{role}", tenant, scopes, [role], ttl_s
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


_CLAIMS: list[IO[bytes]] = []  # held until this (short-lived) tool process exits


@dataclass(frozen=True)
class HotAccess:
    """How this process reaches the hot store: ``client`` (a server, or the embedded engine
    when no ClickHouse sink and no ``up`` claim it), else the sink's endpoint ``base_url``."""

    client: Any | None
    base_url: str | None = None


def open_hot(settings: ClickHouseSettings, *, write: bool = False) -> HotAccess:
    """A tool's way to the hot store. The embedded engine is opened only under an exclusive
    claim (sinks/clickhouse/client.py: ``reserve``), so a tool never takes the directory from
    a live sink; without the claim, reads go through the sink's endpoint and writes are
    refused with what to do."""
    if not settings.embedded:
        return HotAccess(connect(settings))
    claim = reserve(settings, exclusive=True)
    if claim is not None:
        try:
            client = connect(settings)  # tables are qualified: the database may not exist yet
        except EngineBusy:  # opened by a process that makes no claim (an older sink)
            claim.close()
        else:
            _CLAIMS.append(claim)
            return HotAccess(client)
    if write:
        raise EngineBusy(
            f"the embedded ClickHouse at {engine_dir(settings)} belongs to a running ClickHouse "
            "sink (or `sealstream up`); stop it first (`sealstream stack down` after `up`, or "
            "stop `sealstream sink clickhouse`)"
        )
    return HotAccess(None, f"http://{settings.query_host}:{settings.query_port}")


def endpoint_call(
    method: str,
    url: str,
    token: str,
    wait_s: float,
    timeout_s: float,
    **kwargs: Any,
) -> httpx.Response:
    """One request to the sink's endpoint, waiting up to ``wait_s`` for the endpoint to come
    back while the sink restarts (its supervisor starts it again within seconds)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            response = httpx.request(
                method,
                url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout_s,
                **kwargs,
            )
        except httpx.TransportError as exc:
            if time.monotonic() >= deadline:
                raise HotUnavailable(
                    f"the ClickHouse sink's endpoint {url} is unreachable: {exc}"
                ) from exc
            time.sleep(0.5)
            continue
        if response.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)  # the sink is up but its engine is not ready yet
            continue
        return response


def hot_reader(
    settings: ClickHouseSettings, token: str | None = None, wait_s: float = 60
) -> tuple[Reader, str]:
    """(run SQL -> rows as dicts, description). SQL names tables unqualified when it goes
    through the endpoint and qualified otherwise: use ``{db}`` in it."""
    access = open_hot(settings)
    if access.client is not None:
        return direct_reader(access.client, settings.database), settings.dsn
    url = f"{access.base_url}/v1/query"
    bearer = token or local_token("*", "auditor")

    def endpoint(sql: str) -> list[dict[str, Any]]:
        response = endpoint_call(
            "POST",
            url,
            bearer,
            wait_s,
            settings.query_timeout_s + 30,
            json={"sql": sql.replace("{db}.", ""), "format": "json"},
        )
        try:
            body = response.json()
        except ValueError as exc:
            raise HotUnavailable(f"{response.status_code} from {url}: not JSON") from exc
        if response.status_code != 200:
            error = body.get("error", {})
            raise HotUnavailable(
                f"{response.status_code} {error.get('code')}: {error.get('message')}"
            )
        return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]

    return endpoint, url
