"""``sealstream registry``: run the schema registry server."""

from __future__ import annotations

import typer

from ops.cli.common import LOGLEVEL, configure, settings_of

app = typer.Typer(
    help="The schema registry (Confluent Schema Registry REST API).", no_args_is_help=True
)


@app.command()
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Bind address [env SEALSTREAM_REGISTRY_HOST]."),
    port: int | None = typer.Option(None, help="Port [env SEALSTREAM_REGISTRY_PORT]."),
    loglevel: str | None = LOGLEVEL,
) -> None:
    """Serve the registry in the foreground, state in the compacted topic `_schemas`."""
    from schemas.registry.server import serve as run

    configure(loglevel, "registry")
    config = settings_of(ctx)
    config.kafka_role = "registry"  # its own principal on the secured local stack
    settings = config.registry.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    run(config.kafka, settings)
