"""The ``sealstream`` command: one entry point, one sub-command group per concern."""

from __future__ import annotations

import typer

from ops.cli.dlq import app as dlq_app
from ops.cli.gateway import serve as serve_gateway
from ops.cli.gateway import tokens_app
from ops.cli.keys import app as keys_app
from ops.cli.ops import audit, replay_app, verify
from ops.cli.registry import app as registry_app
from ops.cli.schemas import app as schemas_app
from ops.cli.sinks import clickhouse_app, objects_app, query, sink_app
from ops.cli.stack import app as stack_app
from ops.cli.topics import app as topics_app
from ops.cli.up import demo_command, restart_command, up_command
from ops.cli.worker import worker

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
app.command("gateway", help="Run the ingest gateway in the foreground.")(serve_gateway)
app.add_typer(tokens_app, name="tokens")
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
