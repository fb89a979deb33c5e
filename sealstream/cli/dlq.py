"""``sealstream dlq stats|list|show``: inspect dead letters (read-only; nothing is committed)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from sealstream.settings import KafkaSettings, RegistrySettings, WorkerSettings

console = Console()
err = Console(stderr=True)
app = typer.Typer(help="Dead letters: statistics, listing, one in full.", no_args_is_help=True)

TopicOption = typer.Option(None, "--topic", help="Dead-letter topic (default: events.raw.dlq).")


def _millis(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        err.print(f"[red]--{name} must be an ISO date or time, not {value!r}[/]")
        raise typer.Exit(2) from exc
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _filter(**kwargs: Any) -> Any:
    from streams.dlq import Filter

    return Filter(
        reason=kwargs["reason"],
        stage=kwargs["stage"],
        tenant=kwargs["tenant"],
        event_type=kwargs["event_type"],
        since_ms=_millis(kwargs["since"], "since"),
        until_ms=_millis(kwargs["until"], "until"),
        partition=kwargs["partition"],
        from_offset=kwargs["from_offset"],
        to_offset=kwargs["to_offset"],
    )


def _read(topic: str | None, selection: Any) -> Any:
    from streams.dlq import read_dead_letters

    name = topic or WorkerSettings().dlq_topic
    try:
        return list(read_dead_letters(KafkaSettings(), name, selection))
    except LookupError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@app.command("stats")
def stats(
    topic: str | None = TopicOption,
    reason: str | None = typer.Option(None),
    stage: str | None = typer.Option(None),
    tenant: str | None = typer.Option(None),
    event_type: str | None = typer.Option(None, "--event-type"),
    since: str | None = typer.Option(None, help="ISO time; failed at or after."),
    until: str | None = typer.Option(None, help="ISO time; failed at or before."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Counts by reason, stage, tenant, event type and age."""
    from streams.dlq import stats as count

    selection = _filter(
        reason=reason,
        stage=stage,
        tenant=tenant,
        event_type=event_type,
        since=since,
        until=until,
        partition=None,
        from_offset=None,
        to_offset=None,
    )
    result = count(iter(_read(topic, selection)))
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(f"{result['total']} dead letters")
    for key in ("reason", "stage", "tenant", "event_type", "age"):
        table = Table(title=f"by {key}")
        table.add_column(key)
        table.add_column("count", justify="right")
        for name, n in result[key].items():
            table.add_row(name, str(n))
        console.print(table)


@app.command("list")
def list_letters(
    topic: str | None = TopicOption,
    reason: str | None = typer.Option(None),
    stage: str | None = typer.Option(None),
    tenant: str | None = typer.Option(None),
    event_type: str | None = typer.Option(None, "--event-type"),
    since: str | None = typer.Option(None),
    until: str | None = typer.Option(None),
    partition: int | None = typer.Option(None),
    from_offset: int | None = typer.Option(None, "--from-offset"),
    to_offset: int | None = typer.Option(None, "--to-offset"),
    limit: int = typer.Option(100, help="At most this many rows (0 = all)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dead letters matching the filters, one line each (`dlq show P:O` for one in full)."""
    selection = _filter(
        reason=reason,
        stage=stage,
        tenant=tenant,
        event_type=event_type,
        since=since,
        until=until,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
    )
    letters = _read(topic, selection)
    rows = [letter.summary() for letter in (letters[:limit] if limit else letters)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(
        title=f"{len(letters)} dead letters"
        + (f" (first {limit})" if limit and len(letters) > limit else "")
    )
    for name in (
        "partition:offset",
        "reason",
        "stage",
        "tenant",
        "event_type",
        "source",
        "message",
    ):
        table.add_column(name)
    for row in rows:
        table.add_row(
            f"{row['partition']}:{row['offset']}",
            row["reason"],
            row["stage"],
            row["tenant"],
            row["event_type"],
            row["source"],
            row["message"],
        )
    console.print(table)


@app.command("show")
def show(
    coordinates: str = typer.Argument(..., help="PARTITION:OFFSET of the dead letter."),
    topic: str | None = TopicOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One dead letter in full: every header, the value decoded if its schema allows, else its
    original bytes."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from schemas.serde import Decoder, registry_lookup

    try:
        partition, offset = (int(x) for x in coordinates.split(":"))
    except ValueError as exc:
        err.print("[red]give PARTITION:OFFSET, e.g. 0:42[/]")
        raise typer.Exit(2) from exc
    selection = _filter(
        reason=None,
        stage=None,
        tenant=None,
        event_type=None,
        since=None,
        until=None,
        partition=partition,
        from_offset=offset,
        to_offset=offset,
    )
    letters = _read(topic, selection)
    if not letters:
        err.print(f"[red]no dead letter at {coordinates}[/]")
        raise typer.Exit(1)
    decoder = Decoder(registry_lookup(SchemaRegistryClient(RegistrySettings().client_config())))
    detail = letters[0].detail(decoder)
    if as_json:
        typer.echo(json.dumps(detail, default=str))
        return
    from rich.pretty import Pretty

    console.print(Pretty(detail))
