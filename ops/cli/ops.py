"""Operator tools: ``sealstream verify``, ``sealstream replay cold`` and ``sealstream audit``
(the work is in ops/verify.py, ops/backfill.py and ops/trail.py).

Exit codes scripts can rely on: 0 clean / done, 1 problems found, 2 usage or a store
unreachable.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ops.backfill import replay_cold as run_replay_cold
from ops.cli.common import ConsoleFeedback, counted_bars, safe, settings_of
from ops.errors import ProblemsFound
from ops.trail import lookup
from ops.verify import verify as run_verify

console = Console()

replay_app = typer.Typer(help="Rebuild stores from other stores.", no_args_is_help=True)

SHOWN_FINDINGS = 200


def verify(
    ctx: typer.Context,
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
    feedback = ConsoleFeedback(counted_bars)
    report = run_verify(settings_of(ctx), target, since, until, tenant, event_type, token, feedback)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), default=str))
    else:
        _print_report(report)
    if not report.ok:
        raise ProblemsFound()


def _print_findings(findings: list[Any]) -> None:
    table = Table(title="problems")
    for name in ("store", "kind", "chain", "seq", "event_id", "where", "detail"):
        table.add_column(name)
    for f in findings[:SHOWN_FINDINGS]:  # stored values: never markup
        cells = (f.store, f.kind, f.chain_id, f.seq, f.event_id, f.location, f.detail)
        table.add_row(*(safe(c) for c in cells))
    console.print(table)
    if len(findings) > SHOWN_FINDINGS:
        console.print(f"... and {len(findings) - SHOWN_FINDINGS} more (--json for all)")


def _print_report(report: Any) -> None:
    if report.findings:
        _print_findings(report.findings)
    for drift in report.drift:
        console.print(Text.assemble(("drift", "yellow"), " ", safe(drift)))
    for name, chain in sorted(report.chains.items()):
        if chain.get("after_checkpoint"):  # unfiltered runs: what no checkpoint vouches for
            since = chain["unanchored_since"] or "an unknown time"
            after = chain["checkpoint_seq"]
            anchor = f"after checkpoint {after}" if after is not None else "no checkpoint yet"
            what = f": tail unanchored since {since} ({chain['after_checkpoint']} entries {anchor})"
            console.print(Text.assemble(safe(name, "yellow"), safe(what)))
    if report.in_flight:
        console.print(f"{report.in_flight} entries in flight (not yet in both stores) not compared")
    verdict = "[green]clean[/]" if report.ok else "[red]PROBLEMS[/]"
    console.print(
        f"{verdict}: checked {report.checked['hot']} hot and {report.checked['cold']} cold "
        f"entries, {report.checkpoints} checkpoints; {report.by_kind() or 'no findings'}"
    )


@replay_app.command("cold")
def replay_cold(
    ctx: typer.Context,
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
    feedback = ConsoleFeedback(counted_bars)
    report = run_replay_cold(settings_of(ctx), since, until, tenant, event_type, feedback)
    result = report.as_dict()
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        table = Table(title="reconciliation")
        for name in ("tenant", "day", "cold (hot-routed)", "inserted", "already present"):
            table.add_column(name)
        for row in result["reconciliation"]:
            cells = (row["cold"], row["inserted"], row["present"])
            table.add_row(safe(row["tenant"]), safe(row["day"]), *(str(c) for c in cells))
        console.print(table)
        for bad in report.bad_files + report.bad_records:
            console.print(Text.assemble(("rejected", "red"), " ", safe(bad)))
        console.print(
            f"{report.files} files: {report.inserted} rows inserted, {report.present} already "
            f"present, {report.cold_only} cold-only skipped"
        )
    if not report.ok:
        raise ProblemsFound()


def audit(
    ctx: typer.Context,
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
    trail = lookup(settings_of(ctx), event_id, token, from_store, ConsoleFeedback())
    if as_json:
        typer.echo(json.dumps(trail, default=str))
    else:
        from rich.pretty import Pretty

        console.print(Pretty(trail))
    if not trail["processing"]["signature_valid"]:
        raise ProblemsFound()
