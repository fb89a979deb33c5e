"""The ``sealstream`` command: one entry point, one sub-command group per concern."""

from __future__ import annotations

import typer

from sealstream.cli.registry import app as registry_app
from sealstream.cli.schemas import app as schemas_app
from sealstream.cli.stack import app as stack_app
from sealstream.cli.topics import app as topics_app

app = typer.Typer(
    name="sealstream",
    help="Sealstream: an auditable Kafka event pipeline.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")
app.add_typer(registry_app, name="registry")
app.add_typer(topics_app, name="topics")


def main() -> None:
    app()
