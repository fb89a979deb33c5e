"""``sealstream sink``, ``clickhouse``, ``objects`` and ``query``: the stores and their readers."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ops.cli.common import LOGLEVEL, configure, err, safe, settings_of
from ops.errors import Refused, ServiceExit, Unreachable, UsageError
from sealstream.settings import SinkSettings

console = Console()

sink_app = typer.Typer(
    help="Run a sink: Kafka -> hot (ClickHouse) or cold (objects).", no_args_is_help=True
)
clickhouse_app = typer.Typer(help="The hot store's schema.", no_args_is_help=True)
objects_app = typer.Typer(help="The cold store: retention.", no_args_is_help=True)


def _metrics(sink: SinkSettings, port: int) -> None:
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=sink.metrics_host)


@sink_app.command("clickhouse")
def sink_clickhouse(ctx: typer.Context, loglevel: str | None = LOGLEVEL) -> None:
    """Consume events.signed, audit.decisions, events.raw.dlq and audit.checkpoints into
    ClickHouse (embedded by default); in embedded mode also serve the query endpoint."""
    from sinks.clickhouse.trail_index import TrailIndex
    from sinks.service import clickhouse_runner, start_query_endpoint

    configure(loglevel, "sink-clickhouse")
    settings = settings_of(ctx)
    settings.kafka_role = "sink-clickhouse"  # its own principal on the secured local stack
    kafka, registry, clickhouse = settings.kafka, settings.registry, settings.clickhouse
    sink = settings.sink
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
        raise ServiceExit(runner.exit_code)


@sink_app.command("objects")
def sink_objects(ctx: typer.Context, loglevel: str | None = LOGLEVEL) -> None:
    """Consume events.signed into Avro files in the cold store (a directory or S3)."""
    from sinks.service import object_runner

    configure(loglevel, "sink-objects")
    settings = settings_of(ctx)
    settings.kafka_role = "sink-objects"  # its own principal on the secured local stack
    sink = settings.sink
    _metrics(sink, sink.objects_metrics_port)
    runner = object_runner(settings.kafka, settings.registry, settings.objects, sink)
    runner.install_signal_handlers()
    runner.run()
    if runner.exit_code:  # e.g. 69: the consumer failed for good; a fresh start gets a new one
        raise ServiceExit(runner.exit_code)


@clickhouse_app.command("migrate")
def migrate(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Apply the hot store's versioned DDL (idempotent). The ClickHouse sink also does this at
    start; in embedded mode, run this only while the sink is stopped."""
    from sinks.clickhouse.access import open_hot
    from sinks.clickhouse.client import EngineBusy
    from sinks.clickhouse.migrations import MigrationError
    from sinks.clickhouse.migrations import migrate as apply

    settings = settings_of(ctx).clickhouse
    try:
        client = open_hot(settings, write=True).client
        assert client is not None
        report = apply(client, settings)
        access = 0 if settings.embedded else _apply_access(client, settings)
    except EngineBusy as exc:
        raise Unreachable(str(exc)) from exc
    except MigrationError as exc:
        raise Refused(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps({**report.as_dict(), "access_statements": access}))
        return
    console.print(
        f"applied {report.applied or 'nothing'}, already applied {report.already}"
        + (f", TTL updated on {report.ttl_changed}" if report.ttl_changed else "")
        + (f"; roles, row policies and users: {access} statements" if access else "")
    )


def _apply_access(client: Any, settings: Any) -> int:
    """A server's roles and row policies (sinks/clickhouse/roles.py), or Refused saying why."""
    from sinks.clickhouse.roles import AccessSettings, apply_access

    try:
        return apply_access(client, settings, AccessSettings())
    except Exception as exc:  # the server's own refusal (no access management), a bad tenant
        raise Refused(
            f"schema migrated, but access control was not applied: {exc}. The user needs "
            "access management (CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT=1 or access_management "
            "in users.xml)"
        ) from exc


def _print_table(result: dict[str, Any]) -> None:
    table = Table(show_lines=False)
    for name in result["columns"]:
        table.add_column(safe(name))
    for row in result["rows"]:
        table.add_row(*[safe("NULL" if v is None else v) for v in row])
    console.print(table)
    err.print(f"{result['row_count']} rows in {result['elapsed_ms']:.1f} ms")


def query(
    ctx: typer.Context,
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
    from ops.query import query as run_query

    if fmt not in ("table", "csv", "json"):
        raise UsageError("--format must be table, csv or json")
    result = run_query(settings_of(ctx), sql, token, tenant, endpoint)
    if fmt == "json":
        typer.echo(json.dumps(result, default=str))
    elif fmt == "csv":
        from sinks.clickhouse.endpoint import to_csv

        sys.stdout.write(to_csv(result["columns"], result["rows"]))
    else:
        _print_table(result)


@objects_app.command("retention")
def retention(
    ctx: typer.Context,
    apply: bool = typer.Option(False, "--apply", help="Delete; without it, only report."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Apply the cold store's retention rules (config/retention.yaml) and report what expired."""
    from sinks.objects.retention import RetentionRules, apply_retention
    from sinks.objects.store import ObjectStore

    settings = settings_of(ctx).objects
    rules = RetentionRules.load(settings.retention_file)
    report = apply_retention(ObjectStore(settings), settings.prefix, rules, delete=apply)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    table = Table(title=("removed" if apply else "would remove (dry run; --apply deletes)"))
    for name in ("tenant", "event_type", "days kept", "files", "records", "bytes"):
        table.add_column(name)
    for row in report.rows():
        table.add_row(*[safe(v) for v in row])
    console.print(table)
    console.print(f"kept {report.kept_files} files")
