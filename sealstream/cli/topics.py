"""``sealstream topics``: create and list the pipeline's Kafka topics on any cluster."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from sealstream.settings import KafkaSettings, StackSettings
from sealstream.topics import ensure_topics, pipeline_topics

app = typer.Typer(help="The pipeline's Kafka topics.", no_args_is_help=True)
console = Console()


@app.command()
def create(
    partitions: int = typer.Option(
        None,
        min=1,
        help="Partitions for the event topics [default: SEALSTREAM_STACK_DEFAULT_PARTITIONS].",
    ),
) -> None:
    """Create every missing pipeline topic (existing topics are left alone)."""
    count = partitions or StackSettings().default_partitions
    created = ensure_topics(KafkaSettings(), pipeline_topics(count))
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@app.command("list")
def list_topics() -> None:
    """Show the topics the pipeline needs, their partitions and cleanup policy."""
    table = Table("topic", "partitions", "cleanup.policy", "purpose")
    for spec in pipeline_topics(StackSettings().default_partitions):
        table.add_row(
            spec.name, str(spec.partitions), spec.config.get("cleanup.policy", ""), spec.purpose
        )
    console.print(table)
