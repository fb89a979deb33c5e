"""``sealstream stack``: the local Kafka broker (KRaft) and schema registry."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ops.errors import NotFound, OperatorError, ProblemsFound, UsageError
from ops.stack.local import ComponentStatus, LocalStack
from ops.stack.process import StackError
from sealstream.settings import StackSettings

app = typer.Typer(
    help="Run the local stack: Apache Kafka (KRaft) and the schema registry.",
    no_args_is_help=True,
)
console = Console()

DirOption = typer.Option(None, "--dir", help="Stack directory [env SEALSTREAM_STACK_DIR].")
KafkaPort = typer.Option(None, help="Broker port [env SEALSTREAM_STACK_KAFKA_PORT].")
ControllerPort = typer.Option(
    None, help="KRaft controller port [SEALSTREAM_STACK_CONTROLLER_PORT]."
)
RegistryPort = typer.Option(None, help="Registry port [env SEALSTREAM_STACK_REGISTRY_PORT].")
Brokers = typer.Option(
    None,
    min=1,
    max=5,
    help="Kafka brokers: 3 runs a replicated cluster (replication factor 3, "
    "min.insync.replicas 2) [env SEALSTREAM_STACK_BROKERS].",
)


def stack_settings(
    directory: Path | None = None,
    kafka_port: int | None = None,
    controller_port: int | None = None,
    registry_port: int | None = None,
    brokers: int | None = None,
    *,
    saved_first: bool = False,
) -> StackSettings:
    """The stack's settings: defaults, what `up` saved in the stack dir, environment, options.

    `up` lets the environment and options override the saved values (a stopped stack can move
    to other ports; a running one refuses). `status`, `down` and `logs` describe the stack that
    runs, so for them (``saved_first``) the saved values win over the environment.
    """
    base = StackSettings() if directory is None else StackSettings(dir=directory)
    saved = LocalStack.saved_overrides(base.dir)
    if not saved_first:
        saved = {k: v for k, v in saved.items() if k not in base.model_fields_set}
    explicit: dict[str, Any] = {
        "kafka_port": kafka_port,
        "controller_port": controller_port,
        "registry_port": registry_port,
        "brokers": brokers,
    }
    merged = {**saved, **{k: v for k, v in explicit.items() if v is not None}}
    return StackSettings.model_validate({**base.model_dump(), **merged}) if merged else base


def _show(statuses: list[ComponentStatus], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in statuses], indent=2))
        return
    table = Table("component", "pid", "address", "healthy")
    for s in statuses:
        health = "[green]yes[/]" if s.healthy else "[red]no[/]"
        table.add_row(s.name, str(s.pid or "-"), s.address, health)
    console.print(table)


def start_stack(settings: StackSettings) -> LocalStack:
    """Bring the stack up with a progress spinner; an OperatorError (exit 1) if it cannot."""
    with console.status("starting the local stack") as spinner:
        stack = LocalStack(settings, progress=lambda m: spinner.update(m))
        started = time.monotonic()
        was_running = all(s.healthy for s in stack.status())
        try:
            statuses = stack.up()
        except StackError as exc:
            raise OperatorError(f"stack up failed: {exc}", stdout=True) from exc
    if was_running:
        console.print(f"local stack already running ({stack.dir})")
    else:
        console.print(f"local stack up in {time.monotonic() - started:.1f} s ({stack.dir})")
    console.print(f"  Kafka bootstrap   {stack.bootstrap}")
    console.print(f"  schema registry   {stack.registry_url}")
    if not all(s.healthy for s in statuses):
        _show(statuses, False)
        raise ProblemsFound()
    return stack


@app.command()
def up(
    directory: Path | None = DirOption,
    kafka_port: int | None = KafkaPort,
    controller_port: int | None = ControllerPort,
    registry_port: int | None = RegistryPort,
    brokers: int | None = Brokers,
) -> None:
    """Start Kafka and the registry (if not running), create the topics, wait until healthy."""
    start_stack(stack_settings(directory, kafka_port, controller_port, registry_port, brokers))


@app.command()
def down(directory: Path | None = DirOption) -> None:
    """Stop the registry, then Kafka; the data stays in the stack directory."""
    stack = LocalStack(stack_settings(directory, saved_first=True))
    with console.status("stopping the local stack"):
        stopped = stack.down()
    console.print("local stack stopped" if stopped else "local stack was not running")


@app.command()
def status(
    directory: Path | None = DirOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show each component's pid, address and health; exit 1 if any is unhealthy."""
    statuses = LocalStack(stack_settings(directory, saved_first=True)).status()
    _show(statuses, as_json)
    if not all(s.healthy for s in statuses):
        raise ProblemsFound()


@app.command()
def logs(
    component: str = typer.Argument("kafka", help="kafka or registry"),
    lines: int = typer.Option(50, "-n", help="How many lines from the end."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    directory: Path | None = DirOption,
) -> None:
    """Print the end of a component's log."""
    stack = LocalStack(stack_settings(directory, saved_first=True))
    processes = {"kafka": stack.kafka, "registry": stack.registry}
    if component not in processes:
        raise UsageError(f"unknown component {component!r}; choose kafka or registry", stdout=True)
    path = processes[component].log_file
    if not path.exists():
        raise NotFound(f"no log yet at {path}", stdout=True)
    with path.open(errors="replace") as handle:
        for line in deque(handle, maxlen=max(lines, 0)):
            typer.echo(line.rstrip("\n"))
        try:
            while follow:
                line = handle.readline()
                if line:
                    typer.echo(line.rstrip("\n"))
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:  # Ctrl-C ends --follow; not an error
            pass
