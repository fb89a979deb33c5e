"""The ``sealstream`` command: one entry point, one sub-command group per concern.

The root loads the settings once (``ctx.obj``, see ops/settings.py) and maps every
:class:`~ops.errors.OperatorError` a command raises, once, to its message and exit code.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from ops.cli.common import safe
from ops.cli.dlq import app as dlq_app
from ops.cli.gateway import serve as serve_gateway
from ops.cli.gateway import tokens_app
from ops.cli.keys import app as keys_app
from ops.cli.ops import audit, replay_app, verify
from ops.cli.receipts import app as receipts_app
from ops.cli.registry import app as registry_app
from ops.cli.schemas import app as schemas_app
from ops.cli.sinks import clickhouse_app, objects_app, query, sink_app
from ops.cli.stack import app as stack_app
from ops.cli.topics import app as topics_app
from ops.cli.up import demo_command, restart_command, up_command
from ops.cli.worker import worker
from ops.errors import OperatorError, UsageError
from ops.settings import Settings
from sealstream.keys import KeyError_


def report(error: OperatorError) -> int:
    """Print ``error``'s message (if it has one) where its command prints errors; its code."""
    if error.message:
        Console(stderr=not error.stdout).print(safe(error.message, "red"))
    return error.exit_code


class Root(TyperGroup):
    """The root command: every sub-command runs inside it, so its errors end here, whether
    the command line runs through :func:`main` or a test's ``CliRunner``."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except OperatorError as error:
            raise typer.Exit(report(error)) from error
        except KeyError_ as error:  # a key file unusable or unsafe at start-up: say which, how
            raise typer.Exit(report(UsageError(str(error)))) from error


app = typer.Typer(
    cls=Root,
    name="sealstream",
    help="Sealstream: an auditable Kafka event pipeline.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def load_settings(ctx: typer.Context) -> None:
    ctx.ensure_object(Settings)  # a caller's own (a test's ``obj=``) is kept


app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")
app.add_typer(registry_app, name="registry")
app.add_typer(topics_app, name="topics")
app.command("gateway", help="Run the ingest gateway in the foreground.")(serve_gateway)
app.add_typer(tokens_app, name="tokens")
app.add_typer(receipts_app, name="receipts")
app.command("worker", help="Run a stream processor (faust worker) in the foreground.")(worker)
app.add_typer(sink_app, name="sink")
app.add_typer(clickhouse_app, name="clickhouse")
app.add_typer(objects_app, name="objects")
app.command("query")(query)
app.command("verify")(verify)
app.command("audit")(audit)
app.add_typer(dlq_app, name="dlq")
app.add_typer(replay_app, name="replay")


app.command("up")(up_command)
app.command("demo")(demo_command)
app.command("restart")(restart_command)
app.add_typer(keys_app, name="keys")


def main() -> None:
    app()
