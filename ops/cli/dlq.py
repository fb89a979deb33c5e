"""``sealstream dlq stats|list|show|replay|purge``: inspect, replay and purge dead letters
(the work is in ops/dlq.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ops import dlq
from ops.cli.common import ConsoleFeedback, safe, settings_of
from ops.dlq import ReplayOptions, Selection
from ops.errors import Refused

console = Console()
app = typer.Typer(help="Dead letters: statistics, listing, one in full.", no_args_is_help=True)

TopicOption = typer.Option(None, "--topic", help="Dead-letter topic (default: events.raw.dlq).")
# The selection every dlq command takes, declared once.
Reason = Annotated[str | None, typer.Option(help="dlq.reason, e.g. unknown_schema.")]
Stage = Annotated[str | None, typer.Option(help="dlq.stage, e.g. decode, enrich.")]
Tenant = Annotated[str | None, typer.Option(help="The record's tenant header.")]
EventType = Annotated[str | None, typer.Option("--event-type", help="The event_type header.")]
Since = Annotated[str | None, typer.Option(help="ISO time; failed at or after.")]
Until = Annotated[str | None, typer.Option(help="ISO time; failed at or before.")]
Partition = Annotated[int | None, typer.Option(help="Only this partition.")]
FromOffset = Annotated[int | None, typer.Option("--from-offset", help="First offset.")]
ToOffset = Annotated[int | None, typer.Option("--to-offset", help="Last offset.")]

LIST_COLUMNS = ("partition:offset", "reason", "stage", "tenant", "event_type", "source", "message")
SHOWN_PREDICTIONS = 200


@app.command("stats")
def stats(
    ctx: typer.Context,
    topic: str | None = TopicOption,
    reason: Reason = None,
    stage: Stage = None,
    tenant: Tenant = None,
    event_type: EventType = None,
    since: Since = None,
    until: Until = None,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Counts by reason, stage, tenant, event type and age."""
    selection = Selection(topic, reason, stage, tenant, event_type, since, until)
    result = dlq.stats(settings_of(ctx), selection)
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(f"{result['total']} dead letters")
    for key in ("reason", "stage", "tenant", "event_type", "age"):
        table = Table(title=f"by {key}")
        table.add_column(key)
        table.add_column("count", justify="right")
        for name, n in result[key].items():
            table.add_row(safe(name), str(n))
        console.print(table)


@app.command("list")
def list_letters(
    ctx: typer.Context,
    topic: str | None = TopicOption,
    reason: Reason = None,
    stage: Stage = None,
    tenant: Tenant = None,
    event_type: EventType = None,
    since: Since = None,
    until: Until = None,
    partition: Partition = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    limit: int = typer.Option(100, help="At most this many rows (0 = all)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dead letters matching the filters, one line each (`dlq show P:O` for one in full)."""
    selection = Selection(
        topic, reason, stage, tenant, event_type, since, until, partition, from_offset, to_offset
    )
    letters = dlq.listing(settings_of(ctx), selection)
    rows = [letter.summary() for letter in (letters[:limit] if limit else letters)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(
        title=f"{len(letters)} dead letters"
        + (f" (first {limit})" if limit and len(letters) > limit else "")
    )
    for name in LIST_COLUMNS:
        table.add_column(name)
    for row in rows:
        table.add_row(
            f"{row['partition']}:{row['offset']}",
            *(safe(row[name]) for name in LIST_COLUMNS[1:]),
        )
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    coordinates: str = typer.Argument(..., help="PARTITION:OFFSET of the dead letter."),
    topic: str | None = TopicOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One dead letter in full: every header, the value decoded if its schema allows, else its
    original bytes."""
    detail = dlq.show(settings_of(ctx), topic, coordinates)
    if as_json:
        typer.echo(json.dumps(detail, default=str))
        return
    from rich.pretty import Pretty

    console.print(Pretty(detail))


@app.command("replay")
def replay(
    ctx: typer.Context,
    topic: str | None = TopicOption,
    reason: Reason = None,
    stage: Stage = None,
    tenant: Tenant = None,
    event_type: EventType = None,
    since: Since = None,
    until: Until = None,
    partition: Partition = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    to: str | None = typer.Option(None, "--to", help="Publish here instead of the original topic."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Predict; write nothing."),
    rate: float = typer.Option(0.0, help="At most this many records per second (0 = no limit)."),
    batch: int = typer.Option(100, help="Records per transaction (and progress step)."),
    token: str | None = typer.Option(None, envvar="SEALSTREAM_TOKEN", help="JWT with dlq:replay."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Re-publish selected dead letters to their original topic (or --to).

    Each is first re-run through today's decoding, validation and enrichment; only those that
    now pass and whose event id is not stored yet are published (--dry-run reports exactly
    this). Published records carry replay.id, replay.of and replay.source headers. Progress is
    kept in the compacted dlq.replays topic, written in the same transaction as the records:
    an interrupted replay continues where it stopped, a finished one repeats nothing.
    """
    selection = Selection(
        topic, reason, stage, tenant, event_type, since, until, partition, from_offset, to_offset
    )
    options = ReplayOptions(to, dry_run, rate, batch)
    done = dlq.replay(settings_of(ctx), selection, options, token, ConsoleFeedback())
    if as_json:
        typer.echo(json.dumps(done.result, default=str))
        return
    replay_id = done.result["replay_id"]
    table = Table(title="dry run: what a replay would do" if dry_run else f"replay {replay_id}")
    for name in ("partition:offset", "outcome", "reason", "event_id"):
        table.add_column(name)
    for p in done.predictions[:SHOWN_PREDICTIONS]:
        table.add_row(
            f"{p.letter.partition}:{p.letter.offset}", p.outcome, safe(p.reason), safe(p.event_id)
        )
    console.print(table)
    console.print(done.summary)


@app.command("purge")
def purge(
    ctx: typer.Context,
    topic: str | None = TopicOption,
    reason: Reason = None,
    stage: Stage = None,
    tenant: Tenant = None,
    event_type: EventType = None,
    since: Since = None,
    until: Until = None,
    partition: Partition = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    yes: bool = typer.Option(False, "--yes", help="Confirm without asking."),
    token: str | None = typer.Option(None, envvar="SEALSTREAM_TOKEN", help="JWT with dlq:purge."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Mark selected dead letters as purged: never replayed, hidden from stats and list.
    Kafka cannot delete single records; the bytes expire with the topic's retention."""
    settings = settings_of(ctx)
    selection = Selection(
        topic, reason, stage, tenant, event_type, since, until, partition, from_offset, to_offset
    )
    plan = dlq.select_purge(settings, selection, token)
    if not plan.letters:
        typer.echo(json.dumps({"purged": 0}) if as_json else "nothing to purge")
        return
    if not yes and not typer.confirm(f"purge {len(plan.letters)} dead letters?"):
        raise Refused()
    purged = dlq.purge(settings, plan, ConsoleFeedback())
    typer.echo(json.dumps({"purged": purged}) if as_json else f"purged {purged}")
