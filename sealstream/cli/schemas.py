"""``sealstream schemas``: register the repository's Avro schemas and check compatibility.

``register`` is idempotent: a schema already registered under its subject changes nothing.
``check`` is the CI contract test: exit 1 when any schema in the files would be refused by
the registry's compatibility rules (exit 2 when the registry cannot be reached).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from schemas.catalog import AVRO_DIR, Catalog
from sealstream.settings import RegistrySettings

app = typer.Typer(help="Register and check the repository's Avro schemas.", no_args_is_help=True)
console = Console()

RegistryOption = typer.Option(None, "--registry-url", help="[env SEALSTREAM_REGISTRY_URL]")
DirOption = typer.Option(AVRO_DIR, "--dir", help="Directory of .avsc files.", exists=True)
JsonOption = typer.Option(False, "--json", help="Machine-readable output.")


@dataclass
class Row:
    subject: str
    status: str  # registered | unchanged | compatible | new | incompatible
    version: int | None = None
    id: int | None = None
    detail: str = ""


def _client(url: str | None):  # type: ignore[no-untyped-def]
    from confluent_kafka.schema_registry import SchemaRegistryClient

    settings = RegistrySettings() if url is None else RegistrySettings(url=url)
    return SchemaRegistryClient(settings.client_config())


def _emit(rows: list[Row], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = Table(title=title)
    table.add_column("subject", overflow="fold")
    for column in ("status", "version", "id", "detail"):
        table.add_column(column, overflow="fold")
    colour = {"incompatible": "red", "registered": "green", "new": "yellow"}
    for row in rows:
        style = colour.get(row.status, "")
        table.add_row(
            row.subject,
            f"[{style}]{row.status}[/]" if style else row.status,
            "" if row.version is None else str(row.version),
            "" if row.id is None else str(row.id),
            row.detail,
        )
    console.print(table)


def _unreachable(exc: Exception) -> typer.Exit:
    console.print(f"[red]schema registry unreachable:[/] {exc}")
    return typer.Exit(2)


@app.command()
def register(
    registry_url: str | None = RegistryOption,
    directory: Path = DirOption,
    as_json: bool = JsonOption,
) -> None:
    """Register every schema under its subject; already-registered ones are left unchanged."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    rows: list[Row] = []
    failed = False
    with _client(registry_url) as client:
        for subject, schema in Catalog(directory).subjects().items():
            candidate = Schema(json.dumps(schema), "AVRO")
            try:
                try:
                    found = client.lookup_schema(subject, candidate)
                    rows.append(Row(subject, "unchanged", found.version, found.schema_id))
                    continue
                except SchemaRegistryError as exc:
                    if exc.http_status_code != 404:
                        raise
                result = client.register_schema_full_response(subject, candidate)
                rows.append(Row(subject, "registered", result.version, result.schema_id))
            except SchemaRegistryError as exc:
                failed = True
                rows.append(
                    Row(
                        subject,
                        "incompatible" if exc.http_status_code == 409 else "error",
                        detail=exc.error_message,
                    )
                )
            except Exception as exc:  # connection refused, DNS, timeouts: report, exit 2
                raise _unreachable(exc) from exc
    _emit(rows, as_json, "schemas register")
    if failed:
        raise typer.Exit(1)


@app.command()
def check(
    registry_url: str | None = RegistryOption,
    directory: Path = DirOption,
    as_json: bool = JsonOption,
) -> None:
    """Check every schema against the latest registered version; exit 1 if any would break."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    rows: list[Row] = []
    with _client(registry_url) as client:
        for subject, schema in Catalog(directory).subjects().items():
            candidate = Schema(json.dumps(schema), "AVRO")
            try:
                ok = client.test_compatibility(subject, candidate, verbose=True)
                rows.append(Row(subject, "compatible" if ok else "incompatible"))
                if not ok:
                    rows[-1].detail = _reasons(registry_url, subject, schema)
            except SchemaRegistryError as exc:
                if exc.error_code == 40401:
                    rows.append(Row(subject, "new", detail="not registered yet"))
                else:
                    rows.append(Row(subject, "error", detail=exc.error_message))
            except Exception as exc:
                raise _unreachable(exc) from exc
    _emit(rows, as_json, "schemas check")
    if any(r.status in ("incompatible", "error") for r in rows):
        raise typer.Exit(1)


def _reasons(registry_url: str | None, subject: str, schema: dict[str, object]) -> str:
    """The registry's verbose messages (the client's test_compatibility returns only a bool)."""
    import httpx

    settings = RegistrySettings() if registry_url is None else RegistrySettings(url=registry_url)
    response = httpx.post(
        f"{settings.url}/compatibility/subjects/{subject}/versions/latest",
        params={"verbose": "true"},
        json={"schema": json.dumps(schema)},
        timeout=10,
    )
    messages = response.json().get("messages", []) if response.is_success else []
    return "; ".join(str(m) for m in messages)[:300]
