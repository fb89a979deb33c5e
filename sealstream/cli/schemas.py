"""``sealstream schemas``: register the repo's Avro schemas and check compatibility."""

from __future__ import annotations

import typer

app = typer.Typer(help="Register and check the repository's Avro schemas.", no_args_is_help=True)
