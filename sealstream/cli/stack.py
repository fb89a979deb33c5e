"""``sealstream stack``: the local Kafka broker and schema registry."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run the local stack: Apache Kafka (KRaft) and the schema registry.",
                  no_args_is_help=True)
