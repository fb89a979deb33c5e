"""``sealstream up`` (the main job), ``sealstream demo`` and ``sealstream restart`` (the wiring
is in ops/mainjob.py, the demo's parts in ops/demo.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from ops.cli.common import configure, settings_of
from ops.errors import ProblemsFound
from ops.mainjob import (
    child_env,
    endpoint_query,
    gateway_access,
    restart,
    services,
    write_env_file,
)
from ops.settings import Settings
from sealstream.logs import LEVEL_VAR

console = Console()


def _healthy(url: str, tls: Any = None) -> bool:
    try:
        return httpx.get(url, timeout=2, verify=tls or True).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(supervisor: Any, timeout_s: float) -> list[str]:
    """Wait until every service answers its health URL; the names still not answering."""
    deadline = time.monotonic() + timeout_s
    waiting = [s for s in supervisor.services if s.health_url]
    with console.status("starting gateway, workers and sinks") as spinner:
        while waiting and time.monotonic() < deadline:
            waiting = [s for s in waiting if not _healthy(s.health_url, s.health_tls)]
            spinner.update(f"waiting for {', '.join(s.name for s in waiting) or 'nothing'}")
            time.sleep(0.5)
    return [s.name for s in waiting]


def demo_run(settings: Settings, per_tenant: int, timeout_s: float) -> Any:
    """Publish the mix through the running gateway, wait for it to land, verify: the summary."""
    from rich.progress import Progress

    from ops.demo import (
        DemoSummary,
        count_cold,
        count_hot,
        publish_mix,
        run_verify,
        wait_landed,
    )
    from sinks.objects.store import ObjectStore

    started = time.monotonic()
    today = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)  # an hour boundary at 0:00
    gateway, clickhouse, objects = settings.gateway, settings.clickhouse, settings.objects
    summary = DemoSummary()
    with Progress(console=console) as progress:
        total = (per_tenant + 3) * 3 + 2
        task = progress.add_task("publishing through the gateway", total=total)
        ids, rejected, sent = publish_mix(
            gateway_access(gateway, settings.keys.dir),
            settings.token_auth,
            per_tenant,
            progress=lambda n: progress.advance(task, n),
        )
        summary.published, summary.accepted = sent, len(ids)
        summary.rejected = dict(rejected)
        query, store, wanted = endpoint_query(clickhouse), ObjectStore(objects), set(ids)
        land = progress.add_task("landing hot and cold", total=2 * len(ids))
        cold_files = [0]

        def check() -> tuple[int, int]:
            hot, _ = count_hot(query, ids)
            cold, cold_files[0] = count_cold(store, objects.prefix, wanted, today)
            return hot, cold

        hot, cold, landed = wait_landed(
            check, len(ids), timeout_s, lambda h, c: progress.update(land, completed=h + c)
        )
        summary.stored_hot, summary.stored_cold, summary.cold_files = hot, cold, cold_files[0]
        summary.landed_s = round(time.monotonic() - started, 1) if landed else None
        try:
            summary.dead_lettered = count_hot(query, ids)[1]
        except httpx.TransportError:
            summary.dead_lettered = None  # unknown: the endpoint is not answering
        task = progress.add_task("verify all", total=None)
        summary.verify_ok, report = run_verify()
        progress.update(task, total=1, completed=1)
    summary.verify_checked = dict(report.get("checked") or {})
    summary.verify_findings = dict(report.get("by_kind") or {})
    summary.seconds = round(time.monotonic() - started, 1)
    return summary


def print_summary(summary: Any) -> None:
    table = Table(title="demo summary", show_header=False)
    table.add_row("published", str(summary.published))
    table.add_row("accepted (202, receipt)", str(summary.accepted))
    for code, n in sorted(summary.rejected.items()):
        table.add_row(f"rejected: {code}", str(n))
    table.add_row("dead-lettered", str(summary.dead_lettered))
    table.add_row("rows in ClickHouse", f"{summary.stored_hot} of {summary.accepted}")
    cold = f"{summary.stored_cold} of {summary.accepted} in {summary.cold_files} files"
    table.add_row("in cold storage", cold)
    landed = f"{summary.landed_s} s" if summary.landed_s else "[red]not all[/]"
    table.add_row("landed after", landed)
    verdict = "[green]clean[/]" if summary.verify_ok else f"[red]{summary.verify_findings}[/]"
    table.add_row("verify", f"{verdict} (checked {summary.verify_checked})")
    console.print(table)
    console.print("[green]demo OK[/]" if summary.ok else "[red]demo FAILED[/]")


def where(stack: Any, settings: Settings, supervisor: Any) -> None:
    up, gateway, clickhouse = settings.up, settings.gateway, settings.clickhouse
    table = Table("what", "where")
    access = gateway_access(gateway, settings.keys.dir)
    trust = f", trust {access.ca_file}" if access.ca_file else ""
    mtls = ", client certificates required" if access.client_cert else ""
    table.add_row("gateway", f"{access.url}  (POST /v1/events, /docs{trust}{mtls})")
    table.add_row("dashboard", f"http://{up.dashboard_host}:{up.dashboard_port}/dashboard")
    table.add_row(
        "query / audit",
        f"http://{clickhouse.query_host}:{clickhouse.query_port}  (/v1/query, /v1/audit/ID)",
    )
    table.add_row("Kafka", stack.bootstrap)
    table.add_row("schema registry", stack.registry_url)
    table.add_row("ClickHouse (embedded)", clickhouse.dsn)
    table.add_row("cold storage", settings.objects.url)
    table.add_row("logs", str(supervisor.log_dir))
    table.add_row("processes", str(supervisor.state_file))
    console.print(table)


def up_command(
    ctx: typer.Context,
    directory: Path | None = typer.Option(None, "--dir", help="Stack directory."),
    demo: bool = typer.Option(False, "--demo", help="Run the demo once everything is up."),
    exit_after: bool = typer.Option(
        False, "--exit", help="Stop everything after the demo (exit 0 if it reconciled)."
    ),
    per_tenant: int = typer.Option(60, help="Demo events per tenant."),
    keep_stack: bool = typer.Option(
        False, "--keep-stack", help="Leave Kafka and the registry running on exit."
    ),
) -> None:
    """The main job on the embedded defaults: Kafka and the schema registry, the gateway, the
    workers and both sinks as supervised processes (restarted when they crash, logs under
    <stack dir>/logs), the operations dashboard; Ctrl-C stops everything cleanly."""
    from ops.cli.schemas import register_schemas
    from ops.cli.stack import stack_settings, start_stack
    from ops.dashboard import start_dashboard
    from ops.supervisor import Supervisor
    from schemas.catalog import AVRO_DIR
    from sinks.clickhouse.client import reserve

    # the supervisor's own lines (a service restarted) among the terminal's; each service logs
    # to its file under logs/, as JSON lines (sealstream/logs.py)
    configure(os.environ.get(LEVEL_VAR) or "warning", "up")
    stack_config = stack_settings(directory)
    up = settings_of(ctx).up
    stack = start_stack(stack_config)
    register_schemas(stack_config.registry_settings(), AVRO_DIR, as_json=False)
    env = child_env(stack_config, up)
    os.environ.update(env)  # this process (demo, dashboard) reads the same settings
    settings = settings_of(ctx).reloaded()  # so they are loaded from here on
    write_env_file(stack_config.dir / "up.env", env)
    # while `up` runs, the embedded engine is the sink's even between its restarts: tools go
    # through its endpoint (sinks/clickhouse/client.py: reserve)
    clickhouse = settings.clickhouse
    claim = reserve(clickhouse, exclusive=False) if clickhouse.embedded else None
    logs, state = stack_config.dir / "logs", stack_config.dir / "up.json"
    supervisor = Supervisor(services(settings), logs, state, {**os.environ, **env})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    supervisor.start()
    dashboard = start_dashboard(up, supervisor, stack_config, settings)
    code = 0
    try:
        missing = wait_ready(supervisor, up.ready_timeout_s)
        if missing:
            console.print(f"[red]not ready after {up.ready_timeout_s:.0f} s: {missing}[/]")
        where(stack, settings, supervisor)
        if demo and not stop.is_set():
            summary = demo_run(settings, per_tenant, up.demo_timeout_s)
            print_summary(summary)
            (stack_config.dir / "demo-summary.json").write_text(
                json.dumps(summary.as_dict(), indent=2) + "\n"
            )
            code = 0 if summary.ok else 1
        if not exit_after:
            console.print("running; Ctrl-C stops everything")
            while not stop.wait(1):
                pass
    finally:
        console.print("stopping ...")
        dashboard.stop()
        codes = supervisor.stop()
        if claim is not None:
            claim.close()
        console.print(f"stopped: {codes}")
        if not keep_stack:
            from ops.stack.local import LocalStack

            LocalStack(stack_config).down()
            console.print("stack stopped")
    if code:
        raise ProblemsFound()


def demo_command(
    ctx: typer.Context,
    directory: Path | None = typer.Option(None, "--dir", help="Stack directory of `up`."),
    per_tenant: int = typer.Option(60, help="Events per tenant."),
    timeout_s: float = typer.Option(180, help="How long to wait for everything to land."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary."),
) -> None:
    """Publish a realistic mix through a running `sealstream up`, wait until it lands, print
    the summary (exit 0 if every accepted event is stored hot and cold and verify is clean)."""
    from ops.cli.stack import stack_settings

    up = settings_of(ctx).up
    os.environ.update(child_env(stack_settings(directory, saved_first=True), up))
    summary = demo_run(settings_of(ctx).reloaded(), per_tenant, timeout_s)
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        print_summary(summary)
    if not summary.ok:
        raise ProblemsFound()


def restart_command(
    name: str = typer.Argument(..., help="A process of `sealstream up` (see <dir>/up.json)."),
    directory: Path | None = typer.Option(None, "--dir", help="Stack directory of `up`."),
    timeout_s: float = typer.Option(120, help="How long to wait for it to be back."),
) -> None:
    """Restart one supervised process of a running `sealstream up` (after a key rotation, a
    config change): SIGTERM, and the supervisor starts it again. Exit 0 once it runs again."""
    from ops.cli.stack import stack_settings

    state_file = stack_settings(directory, saved_first=True).dir / "up.json"
    old, new = restart(state_file, name, timeout_s)
    console.print(f"{name} restarted: pid {old} -> {new}")
