"""Operator tools: ``sealstream verify`` and ``sealstream replay cold``.

Exit codes scripts can rely on: 0 clean / done, 1 problems found, 2 usage or a store
unreachable.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from sealstream.settings import (
    ClickHouseSettings,
    KafkaSettings,
    KeySettings,
    ObjectStoreSettings,
    RegistrySettings,
    SinkSettings,
)

console = Console()
err = Console(stderr=True)

replay_app = typer.Typer(help="Rebuild stores from other stores.", no_args_is_help=True)


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        err.print(f"[red]--{name} must be a date YYYY-MM-DD, not {value!r}[/]")
        raise typer.Exit(2) from exc


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    )


def _audit(action: str, detail: dict[str, Any], ok: bool, actor: str | None = None) -> None:
    """Record an operator action twice: a decision record on ``audit.decisions`` (queryable at
    once) and an ``operator_action`` event on the raw topic, which the processors sign and
    chain like any other event. A tool whose records cannot be written says so."""
    from schemas.audit import AuditLog, local_operator, publish_operator_action
    from sealstream.settings import WorkerSettings

    who = actor or local_operator()
    kafka, registry = KafkaSettings(), RegistrySettings()
    try:
        log = AuditLog(kafka, registry, SinkSettings().decisions_topic)
        log.record(
            subject=who,
            tenant="*",
            action=action,
            allow=True,
            reason="OPS_OK" if ok else "OPS_PROBLEMS",
            detail=detail,
        )
        publish_operator_action(
            kafka,
            registry,
            WorkerSettings().raw_topic,
            actor=who,
            action=action,
            ok=ok,
            detail=detail,
        )
    except Exception as exc:  # the tool's result stands; the missing record is reported
        err.print(f"[yellow]audit record for {action} not written: {exc}[/]")


def read_checkpoints(
    kafka: KafkaSettings, registry: RegistrySettings, topic: str
) -> list[dict[str, Any]]:
    """Every record of the checkpoints topic, decoded (none if the topic does not exist)."""
    from sealstream.follow import read_to_end
    from sinks.service import registry_decoder

    decoder = registry_decoder(registry)
    try:
        return [decoder.decode(m.value() or b"")[1] for m in read_to_end(kafka, topic)]
    except LookupError:
        return []


def verify(
    target: str = typer.Argument("all", help="hot, cold or all"),
    since: str | None = typer.Option(None, help="First event day, YYYY-MM-DD."),
    until: str | None = typer.Option(None, help="Last event day, YYYY-MM-DD."),
    tenant: str | None = typer.Option(None, help="Only this tenant."),
    event_type: str | None = typer.Option(None, "--event-type", help="Only this event type."),
    token: str | None = typer.Option(
        None, envvar="SEALSTREAM_TOKEN", help="Auditor JWT for the sink's endpoint."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Recompute every signature and walk every hash chain, anchored to the signed
    checkpoints; compare hot and cold per tenant and day. Exit 1 if anything is wrong."""
    from sealstream.keys import load_hmac_keyring
    from sinks.clickhouse.access import HotUnavailable, hot_reader
    from sinks.objects.reader import Selection
    from sinks.objects.store import ObjectStore
    from sinks.verify import (
        VerifyReport,
        checkpoint_anchors,
        cold_entries,
        hot_entries,
        read_hot,
    )
    from sinks.verify import verify as run_verify

    if target not in ("hot", "cold", "all"):
        err.print("[red]target must be hot, cold or all[/]")
        raise typer.Exit(2)
    selection = Selection(_date(since, "since"), _date(until, "until"), tenant, event_type)
    complete = selection == Selection()
    keys = load_hmac_keyring(KeySettings())
    report = VerifyReport()
    kafka, registry, sink = KafkaSettings(), RegistrySettings(), SinkSettings()
    anchors = checkpoint_anchors(
        read_checkpoints(kafka, registry, sink.checkpoints_topic), keys, report
    )
    objects = ObjectStoreSettings()
    from sinks.service import registry_decoder
    from sinks.verify import settled_offsets, settled_seqs

    settled = settled_offsets(kafka, sink)  # before reading: what both sinks had stored
    horizon = (
        None
        if settled is None
        else settled_seqs(kafka, sink.signed_topic, settled, registry_decoder(registry))
    )
    with _progress() as progress:
        hot = cold = None
        try:
            reader, where = hot_reader(ClickHouseSettings(), token)
            task = progress.add_task(f"hot rows ({where})", total=None)
            hot = hot_entries(read_hot(reader, selection, lambda n: progress.advance(task, n)))
        except HotUnavailable as exc:
            if target != "cold":
                err.print(f"[red]{exc}[/]")
                raise typer.Exit(2) from exc
            err.print(f"[yellow]hot store not read ({exc}); routing holes cannot be explained[/]")
        task = progress.add_task("cold records", total=None)
        cold = cold_entries(
            ObjectStore(objects),
            objects.prefix,
            selection,
            report,
            lambda n: progress.advance(task, n),
        )
        run_verify(hot, cold, keys, anchors, complete, report, settled, horizon)
    if target != "all":
        report.findings = [f for f in report.findings if f.store in (target, "checkpoints")]
        report.chains = {k: v for k, v in report.chains.items() if k.startswith(f"{target}:")}
        if target == "hot":
            report.checked["cold"] = 0
        report.drift = []
    summary = {
        "target": target,
        "complete": complete,
        "ok": report.ok,
        **report.by_kind(),
        "checked": report.checked,
    }
    _audit("verify", summary, report.ok)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), default=str))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report: Any) -> None:
    from rich.markup import escape

    if report.findings:
        table = Table(title="problems")
        for name in ("store", "kind", "chain", "seq", "event_id", "where", "detail"):
            table.add_column(name)
        for f in report.findings[:200]:  # stored values: never markup
            cells = (f.store, f.kind, f.chain_id, f.seq, f.event_id, f.location, f.detail)
            table.add_row(*(escape("-" if c is None else str(c)) for c in cells))
        console.print(table)
        if len(report.findings) > 200:
            console.print(f"... and {len(report.findings) - 200} more (--json for all)")
    for drift in report.drift:
        console.print(f"[yellow]drift[/] {escape(str(drift))}")
    for name, chain in sorted(report.chains.items()):
        if chain.get("after_checkpoint"):  # unfiltered runs: what no checkpoint vouches for
            since = chain["unanchored_since"] or "an unknown time"
            after = chain["checkpoint_seq"]
            anchor = f"after checkpoint {after}" if after is not None else "no checkpoint yet"
            console.print(
                f"[yellow]{escape(name)}[/]: tail unanchored since {since} "
                f"({chain['after_checkpoint']} entries {anchor})"
            )
    if report.in_flight:
        console.print(f"{report.in_flight} entries in flight (not yet in both stores) not compared")
    verdict = "[green]clean[/]" if report.ok else "[red]PROBLEMS[/]"
    console.print(
        f"{verdict}: checked {report.checked['hot']} hot and {report.checked['cold']} cold "
        f"entries, {report.checkpoints} checkpoints; {report.by_kind() or 'no findings'}"
    )


@replay_app.command("cold")
def replay_cold(
    since: str | None = typer.Option(None, help="First event day, YYYY-MM-DD."),
    until: str | None = typer.Option(None, help="Last event day, YYYY-MM-DD."),
    tenant: str | None = typer.Option(None, help="Only this tenant."),
    event_type: str | None = typer.Option(None, "--event-type", help="Only this event type."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Rebuild ClickHouse from the object store: verify each file and record, skip rows
    already present, insert the rest, and print a reconciliation per tenant and day.

    Needs write access to ClickHouse: a server, or the embedded engine with the ClickHouse
    sink stopped. Exit 0 done and clean, 1 done with rejected files or records, 2 no access.
    """
    from sealstream.keys import load_hmac_keyring
    from sinks.backfill import backfill
    from sinks.clickhouse.access import open_hot
    from sinks.clickhouse.client import EngineBusy
    from sinks.clickhouse.migrations import migrate
    from sinks.objects.reader import Selection
    from sinks.objects.store import ObjectStore

    selection = Selection(_date(since, "since"), _date(until, "until"), tenant, event_type)
    settings = ClickHouseSettings()
    try:
        client = open_hot(settings, write=True).client
    except EngineBusy as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    assert client is not None
    migrate(client, settings)
    objects = ObjectStoreSettings()
    with _progress() as progress:
        task = progress.add_task("cold files", total=None)
        report = backfill(
            client,
            settings.database,
            ObjectStore(objects),
            objects.prefix,
            selection,
            load_hmac_keyring(KeySettings()),
            lambda _: progress.advance(task),
        )
    index_path = settings.audit_index_path
    if report.inserted and index_path is not None and index_path.exists():
        from sinks.clickhouse.trail_index import TrailIndex

        index = TrailIndex(index_path)
        index.invalidate()  # ClickHouse changed behind the sink: it rebuilds on start
        index.close()
    result = report.as_dict()
    _audit(
        "replay_cold",
        {k: v for k, v in result.items() if k != "reconciliation"}
        | {"since": since, "until": until, "tenant": tenant, "event_type": event_type},
        report.ok,
    )
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        table = Table(title="reconciliation")
        for name in ("tenant", "day", "cold (hot-routed)", "inserted", "already present"):
            table.add_column(name)
        for row in result["reconciliation"]:
            table.add_row(
                row["tenant"],
                row["day"],
                str(row["cold"]),
                str(row["inserted"]),
                str(row["present"]),
            )
        console.print(table)
        for bad in report.bad_files + report.bad_records:
            console.print(f"[red]rejected[/] {bad}")
        console.print(
            f"{report.files} files: {report.inserted} rows inserted, {report.present} already "
            f"present, {report.cold_only} cold-only skipped"
        )
    raise typer.Exit(0 if report.ok else 1)


def audit(
    event_id: str = typer.Argument(..., help="The event's id."),
    token: str | None = typer.Option(
        None, envvar="SEALSTREAM_TOKEN", help="Auditor JWT for the sink's endpoint."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    from_store: bool = typer.Option(
        False,
        "--from-store",
        help="Read ClickHouse itself, not the ClickHouse sink's audit index (its hot path).",
    ),
) -> None:
    """Everything known about one event: receipt, authorization decision with policy version,
    processing (enrichment, signature, chain position), where it is stored hot and cold,
    dead-letter history and replays. Exit 0 found and its signature verifies, 1 not found or
    it does not verify."""
    from sealstream.keys import load_hmac_keyring
    from sinks.clickhouse.access import (
        HotUnavailable,
        direct_reader,
        endpoint_call,
        local_token,
        open_hot,
    )
    from sinks.objects.store import ObjectStore
    from sinks.trail import StoreSource, audit_trail

    settings = ClickHouseSettings()
    objects = ObjectStoreSettings()
    access = open_hot(settings)
    if access.client is not None:
        read = direct_reader(access.client, settings.database)
        # the sink is not running: ClickHouse itself (its index may be behind a backfill)
        trail = audit_trail(
            StoreSource(read),
            event_id,
            load_hmac_keyring(KeySettings()),
            ObjectStore(objects),
            objects.prefix,
        )
        _audit("audit_lookup", {"event_id": event_id}, trail is not None)
    else:
        url = f"{access.base_url}/v1/audit/{event_id}"
        if from_store:
            url += "?source=store"
        try:
            response = endpoint_call(
                "GET", url, token or local_token("*", "auditor"), wait_s=60, timeout_s=60
            )
        except HotUnavailable as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        if response.status_code not in (200, 404):
            err.print(f"[red]{response.status_code}: {response.text}[/]")
            raise typer.Exit(2)
        trail = response.json() if response.status_code == 200 else None
    if trail is None:
        err.print(f"[red]no stored event {event_id!r}[/]")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(trail, default=str))
    else:
        from rich.pretty import Pretty

        console.print(Pretty(trail))
    raise typer.Exit(0 if trail["processing"]["signature_valid"] else 1)
