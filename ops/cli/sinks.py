"""``sealstream sink``, ``clickhouse``, ``objects`` and ``query``: the stores and their readers."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from sealstream.settings import (
    ClickHouseSettings,
    KafkaSettings,
    ObjectStoreSettings,
    RegistrySettings,
    SinkSettings,
)

console = Console()
err = Console(stderr=True)

sink_app = typer.Typer(
    help="Run a sink: Kafka -> hot (ClickHouse) or cold (objects).", no_args_is_help=True
)
clickhouse_app = typer.Typer(help="The hot store's schema.", no_args_is_help=True)
objects_app = typer.Typer(help="The cold store: retention.", no_args_is_help=True)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def _metrics(sink: SinkSettings, port: int) -> None:
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=sink.metrics_host)


@sink_app.command("clickhouse")
def sink_clickhouse(loglevel: str = typer.Option("info", help="Log level.")) -> None:
    """Consume events.signed, audit.decisions, events.raw.dlq and audit.checkpoints into
    ClickHouse (embedded by default); in embedded mode also serve the query endpoint."""
    from sinks.clickhouse.trail_index import TrailIndex
    from sinks.service import clickhouse_runner, start_query_endpoint

    _logging(loglevel)
    kafka, registry, clickhouse = KafkaSettings(), RegistrySettings(), ClickHouseSettings()
    sink = SinkSettings()
    _metrics(sink, sink.clickhouse_metrics_port)
    serves = clickhouse.embedded and bool(clickhouse.query_port)
    path = clickhouse.audit_index_path
    # the index serves this process's /v1/audit; a server deployment audits from ClickHouse
    index = TrailIndex(path) if path is not None and serves else None
    runner, _ = clickhouse_runner(kafka, registry, clickhouse, sink, index)
    runner.install_signal_handlers()
    server = None
    if serves:
        server = start_query_endpoint(
            clickhouse, kafka, registry, sink.decisions_topic, index=index
        )
    try:
        runner.run()
    finally:
        if server is not None:
            server.should_exit = True
    if runner.exit_code:  # 75: a part broken during an outage, 69: the consumer failed
        raise typer.Exit(runner.exit_code)


@sink_app.command("objects")
def sink_objects(loglevel: str = typer.Option("info", help="Log level.")) -> None:
    """Consume events.signed into Avro files in the cold store (a directory or S3)."""
    from sinks.service import object_runner

    _logging(loglevel)
    sink = SinkSettings()
    _metrics(sink, sink.objects_metrics_port)
    runner = object_runner(KafkaSettings(), RegistrySettings(), ObjectStoreSettings(), sink)
    runner.install_signal_handlers()
    runner.run()
    if runner.exit_code:  # e.g. 69: the consumer failed for good; a fresh start gets a new one
        raise typer.Exit(runner.exit_code)


@clickhouse_app.command("migrate")
def migrate(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Apply the hot store's versioned DDL (idempotent). The ClickHouse sink also does this at
    start; in embedded mode, run this only while the sink is stopped."""
    from sinks.clickhouse.access import open_hot
    from sinks.clickhouse.client import EngineBusy
    from sinks.clickhouse.migrations import MigrationError
    from sinks.clickhouse.migrations import migrate as apply

    settings = ClickHouseSettings()
    try:
        client = open_hot(settings, write=True).client
        assert client is not None
        report = apply(client, settings)
    except EngineBusy as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(3) from exc
    except MigrationError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    console.print(
        f"applied {report.applied or 'nothing'}, already applied {report.already}"
        + (f", TTL updated on {report.ttl_changed}" if report.ttl_changed else "")
    )


def _print_table(result: dict[str, Any]) -> None:
    table = Table(show_lines=False)
    for name in result["columns"]:
        table.add_column(str(name))
    for row in result["rows"]:
        table.add_row(*[str(v) for v in row])
    console.print(table)
    err.print(f"{result['row_count']} rows in {result['elapsed_ms']:.1f} ms")


def query(
    sql: str = typer.Argument(..., help="One read-only SELECT over the analyst tables."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    token: str | None = typer.Option(
        None, envvar="SEALSTREAM_TOKEN", help="JWT with the analyst (or auditor) role."
    ),
    tenant: str | None = typer.Option(
        None, help="Without --token: mint a local analyst token for this tenant (dev stack)."
    ),
    endpoint: str | None = typer.Option(
        None, help="Query endpoint URL (default: the embedded sink's)."
    ),
) -> None:
    """Run one analyst query (read-only, tenant-scoped, audited).

    Embedded mode goes through the ClickHouse sink's query endpoint; with a ClickHouse
    server (SEALSTREAM_CLICKHOUSE_URL=http...) the query runs directly, scoped the same way
    and recorded in the audit trail as the local operator. Exit codes: 0 ok, 1 refused or
    failed, 2 usage, 3 unreachable.
    """
    if fmt not in ("table", "csv", "json"):
        err.print("[red]--format must be table, csv or json[/]")
        raise typer.Exit(2)
    settings = ClickHouseSettings()
    if settings.embedded or endpoint:
        result = _query_endpoint(settings, sql, fmt, token, tenant, endpoint)
    else:
        result = _query_server(settings, sql, tenant)
    if fmt == "json":
        typer.echo(json.dumps(result, default=str))
    elif fmt == "csv":
        from sinks.clickhouse.endpoint import to_csv

        sys.stdout.write(to_csv(result["columns"], result["rows"]))
    else:
        _print_table(result)


def _query_endpoint(
    settings: ClickHouseSettings,
    sql: str,
    fmt: str,
    token: str | None,
    tenant: str | None,
    endpoint: str | None,
) -> dict[str, Any]:
    if token is None:
        if tenant is None:
            err.print("[red]give --token (a JWT with the analyst role) or --tenant (dev stack)[/]")
            raise typer.Exit(2)
        from sealstream.auth import Keyring, auth_settings, issue_token

        auth = auth_settings()
        token = issue_token(
            Keyring.from_settings(auth),
            auth,
            "local-analyst",
            tenant,
            ["analytics:read"],
            ["analyst"],
            300,
        )
    from sinks.clickhouse.access import HotUnavailable, endpoint_call

    url = endpoint or f"http://{settings.query_host}:{settings.query_port}/v1/query"
    try:  # waits a little for a sink its supervisor is restarting
        response = endpoint_call(
            "POST",
            url,
            token,
            wait_s=30,
            timeout_s=settings.query_timeout_s + 10,
            json={"sql": sql, "format": "json"},
        )
    except HotUnavailable as exc:
        err.print(f"[red]{exc}; is `sealstream sink clickhouse` running?[/]")
        raise typer.Exit(3) from exc
    body = response.json()
    if response.status_code != 200:
        error = body.get("error", {})
        err.print(f"[red]{response.status_code} {error.get('code')}: {error.get('message')}[/]")
        raise typer.Exit(1)
    return dict(body)


def _query_server(settings: ClickHouseSettings, sql: str, tenant: str | None) -> dict[str, Any]:
    from schemas.audit import AuditLog, local_operator
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.query import QueryLimits, QueryRejected, analyst, guard, operator, run

    scope = analyst(tenant) if tenant else operator()
    audit = AuditLog(KafkaSettings(), RegistrySettings())
    who = local_operator()
    try:
        safe = guard(sql, scope, settings.database)
    except QueryRejected as exc:
        audit.record(
            subject=who,
            tenant=tenant or "*",
            action="query",
            allow=False,
            reason="QUERY_REJECTED",
            detail={"sql": sql[:4000], "code": exc.code},
        )
        err.print(f"[red]{exc.code}: {exc}[/]")
        raise typer.Exit(1) from exc
    result = run(
        connect(settings, database=settings.database),
        safe,
        settings.query_max_rows,
        settings.query_timeout_s,
        limits=QueryLimits.from_settings(settings),
    )
    audit.record(
        subject=who,
        tenant=tenant or "*",
        action="query",
        allow=True,
        reason="QUERY_OK",
        detail={"sql": sql[:4000], "rows": len(result.rows)},
    )
    return result.as_dict()


@objects_app.command("retention")
def retention(
    apply: bool = typer.Option(False, "--apply", help="Delete; without it, only report."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Apply the cold store's retention rules (config/retention.yaml) and report what expired."""
    from sinks.objects.retention import RetentionRules, apply_retention
    from sinks.objects.store import ObjectStore

    settings = ObjectStoreSettings()
    rules = RetentionRules.load(settings.retention_file)
    report = apply_retention(ObjectStore(settings), settings.prefix, rules, delete=apply)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    table = Table(title=("removed" if apply else "would remove (dry run; --apply deletes)"))
    for name in ("tenant", "event_type", "days kept", "files", "records", "bytes"):
        table.add_column(name)
    for row in report.rows():
        table.add_row(*[str(v) for v in row])
    console.print(table)
    console.print(f"kept {report.kept_files} files")
