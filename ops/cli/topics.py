"""``sealstream topics``: create and list the pipeline's Kafka topics on any cluster."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ops.cli.common import settings_of
from sealstream.topics import ensure_topics, pipeline_topics

app = typer.Typer(help="The pipeline's Kafka topics.", no_args_is_help=True)
console = Console()


@app.command()
def create(
    ctx: typer.Context,
    partitions: int = typer.Option(
        None,
        min=1,
        help="Partitions for the event topics [default: SEALSTREAM_STACK_DEFAULT_PARTITIONS].",
    ),
) -> None:
    """Create every missing pipeline topic (existing topics are left alone)."""
    settings = settings_of(ctx)
    count = partitions or settings.stack.default_partitions
    created = ensure_topics(settings.kafka, pipeline_topics(count))
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@app.command("list")
def list_topics(ctx: typer.Context) -> None:
    """Show the topics the pipeline needs, their partitions and cleanup policy."""
    table = Table("topic", "partitions", "cleanup.policy", "purpose")
    for spec in pipeline_topics(settings_of(ctx).stack.default_partitions):
        table.add_row(
            spec.name, str(spec.partitions), spec.config.get("cleanup.policy", ""), spec.purpose
        )
    console.print(table)


@app.command("limits")
def limits(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The largest event the gateway accepts: derived from max.message.bytes of the topics an
    accepted event is written to (docs/gateway.md, "Limits")."""
    import json

    from producers.limits import RecordLimits
    from sealstream.topics import max_message_bytes, record_limit

    settings = settings_of(ctx)
    gateway, kafka = settings.gateway, settings.kafka
    topics = [gateway.raw_topic, gateway.signed_topic, gateway.dlq_topic]
    sizes = max_message_bytes(kafka, topics)
    found = RecordLimits(*record_limit(kafka, topics))
    result = {
        "max_message_bytes": sizes,
        "max_record_bytes": found.max_record_bytes,
        "set_by": found.topic,
        "max_payload_bytes": found.max_payload_bytes,
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table("topic", "max.message.bytes")
    for name, size in sizes.items():
        table.add_row(name, str(size))
    console.print(table)
    console.print(
        f"largest event payload accepted: about {found.max_payload_bytes} bytes of JSON "
        f"(records up to {found.max_record_bytes} bytes, set by {found.topic})"
    )
