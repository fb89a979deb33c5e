"""``sealstream dlq stats|list|show``: inspect dead letters (read-only; nothing is committed)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sealstream.settings import KafkaSettings, RegistrySettings, WorkerSettings

console = Console()
err = Console(stderr=True)
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


def _millis(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        err.print(f"[red]--{name} must be an ISO date or time, not {value!r}[/]")
        raise typer.Exit(2) from exc
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _filter(
    reason: str | None = None,
    stage: str | None = None,
    tenant: str | None = None,
    event_type: str | None = None,
    since: str | None = None,
    until: str | None = None,
    partition: int | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
) -> Any:
    from streams.dlq import Filter

    return Filter(
        reason,
        stage,
        tenant,
        event_type,
        _millis(since, "since"),
        _millis(until, "until"),
        partition,
        from_offset,
        to_offset,
    )


def _read(topic: str | None, selection: Any, hide_purged: bool = False) -> Any:
    from streams.dlq import PURGED, marker_key, read_dead_letters, read_markers

    settings = WorkerSettings()
    name = topic or settings.dlq_topic
    try:
        letters = list(read_dead_letters(KafkaSettings(), name, selection))
        if hide_purged:
            markers = read_markers(KafkaSettings(), settings.dlq_replays_topic)
            letters = [x for x in letters if markers.get(marker_key(x), {}).get("status") != PURGED]
        return letters
    except LookupError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@app.command("stats")
def stats(
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
    from streams.dlq import stats as count

    selection = _filter(reason, stage, tenant, event_type, since, until)
    result = count(iter(_read(topic, selection, hide_purged=True)))
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
    selection = _filter(
        reason, stage, tenant, event_type, since, until, partition, from_offset, to_offset
    )
    letters = _read(topic, selection, hide_purged=True)
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


def _identity(token: str | None, scope: str) -> tuple[str, str | None]:
    """(who, tenant the action is limited to). A token needs ``scope``; without one the local
    operator acts (access to this machine's keyring is the credential)."""
    from schemas.audit import local_operator

    if token is None:
        return local_operator(), None
    from sealstream.auth import AuthenticationError, Keyring, TokenVerifier, auth_settings

    auth = auth_settings()
    try:
        principal = TokenVerifier(auth, Keyring.from_settings(auth)).verify(token)
    except AuthenticationError as exc:
        err.print(f"[red]token refused: {exc.code}: {exc.message}[/]")
        raise typer.Exit(2) from exc
    if scope not in principal.scopes:
        err.print(f"[red]the token lacks the '{scope}' scope[/]")
        raise typer.Exit(2)
    return principal.subject, principal.tenant


def _predictions(topic: str | None, selection: Any, tenant_limit: str | None) -> tuple[Any, Any]:
    import asyncio

    from sealstream.keys import load_hmac_keyring
    from sealstream.settings import ClickHouseSettings, KeySettings
    from sinks.clickhouse.access import HotUnavailable, hot_reader, quote
    from streams.app import build_processor
    from streams.dlq import read_markers

    settings = WorkerSettings()
    letters = _read(topic, selection)
    try:
        markers = read_markers(KafkaSettings(), settings.dlq_replays_topic)
    except LookupError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    keys = KeySettings()
    processor, _ = build_processor(
        settings, RegistrySettings(), load_hmac_keyring(keys), load_hmac_keyring(keys, "mask.json")
    )
    reader, _ = hot_reader(ClickHouseSettings())

    def stored(ids: list[str]) -> set[str]:
        from clickhouse_connect.driver.exceptions import DatabaseError

        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ", ".join(quote(i) for i in ids[start : start + 500])
            sql = f"SELECT event_id FROM {{db}}.events_by_id WHERE event_id IN ({chunk})"
            try:
                rows = reader(sql)
            except DatabaseError as exc:  # a hot store never created holds nothing
                if "UNKNOWN_DATABASE" in str(exc) or "UNKNOWN_TABLE" in str(exc):
                    return set()
                raise
            found |= {str(r["event_id"]) for r in rows}
        return found

    from streams.dlq import predict

    try:
        predictions = asyncio.run(predict(processor, letters, markers, stored))
    except HotUnavailable as exc:
        err.print(f"[red]cannot tell which events are already stored: {exc}[/]")
        raise typer.Exit(2) from exc
    if tenant_limit is not None:
        for p in predictions:
            if p.tenant != tenant_limit and p.outcome in ("pass", "fail", "stored"):
                p.outcome, p.reason = "denied", f"not tenant {tenant_limit}"
    return letters, predictions


@app.command("replay")
def replay(
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
    import time
    import uuid

    from rich.progress import Progress

    from ops.cli.ops import _audit
    from streams.dlq import REPLAYED, ReplayWriter, summarize

    who, tenant_limit = _identity(token, "dlq:replay")
    selection = _filter(
        reason, stage, tenant, event_type, since, until, partition, from_offset, to_offset
    )
    _, predictions = _predictions(topic, selection, tenant_limit)
    summary = summarize(predictions)
    to_publish = [p for p in predictions if p.outcome == "pass"]
    replay_id = str(uuid.uuid4())
    published = 0
    if not dry_run and to_publish:
        settings = WorkerSettings()
        writer = ReplayWriter(
            KafkaSettings(), settings.dlq_replays_topic, topic or settings.dlq_topic
        )
        started = time.monotonic()
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("replaying", total=len(to_publish))
            for start in range(0, len(to_publish), max(1, batch)):
                chunk = to_publish[start : start + max(1, batch)]
                if rate > 0:  # pace: never ahead of rate * elapsed
                    wait = (published + len(chunk)) / rate - (time.monotonic() - started)
                    if wait > 0:
                        time.sleep(wait)
                writer.write(chunk, REPLAYED, replay_id, who, to)
                published += len(chunk)
                progress.advance(task, len(chunk))
    result = {
        "dry_run": dry_run,
        "replay_id": None if dry_run else replay_id,
        "published": published,
        **summary,
        "letters": [p.as_dict() for p in predictions],
    }
    _audit(
        "dlq_replay_dry_run" if dry_run else "dlq_replay",
        {k: v for k, v in result.items() if k != "letters"} | {"filters": selection.__dict__},
        True,
        actor=who,
    )
    if as_json:
        typer.echo(json.dumps(result, default=str))
        return
    table = Table(title="dry run: what a replay would do" if dry_run else f"replay {replay_id}")
    for name in ("partition:offset", "outcome", "reason", "event_id"):
        table.add_column(name)
    for p in predictions[:200]:
        table.add_row(
            f"{p.letter.partition}:{p.letter.offset}", p.outcome, p.reason, p.event_id or "-"
        )
    console.print(table)
    console.print({k: v for k, v in result.items() if k != "letters"})


@app.command("purge")
def purge(
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
    import uuid

    from ops.cli.ops import _audit
    from streams.dlq import PURGED, Prediction, ReplayWriter, read_markers

    who, tenant_limit = _identity(token, "dlq:purge")
    selection = _filter(
        reason,
        stage,
        tenant if tenant_limit is None else tenant_limit,
        event_type,
        since,
        until,
        partition,
        from_offset,
        to_offset,
    )
    settings = WorkerSettings()
    markers = read_markers(KafkaSettings(), settings.dlq_replays_topic)
    from streams.dlq import marker_key

    letters = [x for x in _read(topic, selection) if marker_key(x) not in markers]
    if not letters:
        typer.echo(json.dumps({"purged": 0}) if as_json else "nothing to purge")
        return
    if not yes and not typer.confirm(f"purge {len(letters)} dead letters?"):
        raise typer.Exit(1)
    writer = ReplayWriter(KafkaSettings(), settings.dlq_replays_topic, topic or settings.dlq_topic)
    writer.write([Prediction(x, PURGED) for x in letters], PURGED, str(uuid.uuid4()), who, None)
    _audit("dlq_purge", {"purged": len(letters), "filters": selection.__dict__}, True, actor=who)
    typer.echo(json.dumps({"purged": len(letters)}) if as_json else f"purged {len(letters)}")
