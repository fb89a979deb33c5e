"""The ``sealstream`` command: one entry point, one sub-command group per concern."""

from __future__ import annotations

import typer

from sealstream.cli.schemas import app as schemas_app
from sealstream.cli.stack import app as stack_app

app = typer.Typer(
    name="sealstream",
    help="Sealstream: an auditable Kafka event pipeline.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")


def main() -> None:
    app()
