"""``sealstream schemas``: register the repository's Avro schemas and check compatibility.

``register`` is idempotent: a schema already registered under its subject changes nothing.
``check`` is the CI contract test: exit 1 when any schema in the files would be refused by
the registry's compatibility rules (exit 2 when the registry cannot be reached).
"""

from __future__ import annotations

import contextlib
import importlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

from ops.cli.common import safe, settings_of
from ops.errors import ProblemsFound, Unavailable, UsageError
from schemas.catalog import AVRO_DIR, Catalog
from sealstream.settings import RegistrySettings

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

app = typer.Typer(help="Register and check the repository's Avro schemas.", no_args_is_help=True)
console = Console()

RegistryOption = typer.Option(
    None, "--registry-url", help="[env SEALSTREAM_REGISTRY_URL or SCHEMA_REGISTRY_URL]"
)
DirOption = typer.Option(AVRO_DIR, "--dir", help="Directory of .avsc files.", exists=True)
JsonOption = typer.Option(False, "--json", help="Machine-readable output.")


@dataclass
class Row:
    subject: str
    status: str  # registered | unchanged | compatible | new | incompatible | error
    version: int | None = None
    id: int | None = None
    detail: str = ""


def _network_errors() -> tuple[type[Exception], ...]:
    """What the registry client raises when the registry cannot be reached (after its retries).

    confluent-kafka's client uses httpx2 when it is installed and httpx otherwise, so both.
    """
    errors: list[type[Exception]] = [httpx.TransportError]
    with contextlib.suppress(ImportError):
        errors.append(importlib.import_module("httpx2").TransportError)
    return tuple(errors)


NETWORK_ERRORS = _network_errors()


def _settings(ctx: typer.Context, url: str | None) -> RegistrySettings:
    """The registry's settings; for the local stack's own registry with no credential given,
    the stack's operator credential (sent to that registry only, never to another URL)."""
    from ops.cli.stack import stack_settings

    settings = settings_of(ctx).registry if url is None else RegistrySettings(url=url)
    if settings.basic_auth_user_info is not None or settings.basic_auth_file is not None:
        return settings
    from ops.stack.local import LocalStack

    stack = stack_settings(saved_first=True)
    if settings.url.rstrip("/") != stack.registry_url or not stack.registry_operator_file.exists():
        return settings
    # only while the stack's own registry process runs: whatever else listens on its port
    # (another user's, while the stack is down) never gets the password
    if LocalStack(stack).registry.pid() is None:
        return settings
    return settings.model_copy(update={"basic_auth_file": stack.registry_operator_file})


def _client(settings: RegistrySettings) -> SchemaRegistryClient:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    try:
        return SchemaRegistryClient(settings.client_config())
    except ValueError as exc:  # a URL the client cannot use
        raise UsageError(f"bad schema registry settings: {exc}", stdout=True) from exc


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
            safe(row.subject),
            safe(row.status, style),
            "" if row.version is None else str(row.version),
            "" if row.id is None else str(row.id),
            safe(row.detail),
        )
    console.print(table)


def _unreachable(settings: RegistrySettings, exc: Exception) -> Unavailable:
    return Unavailable(f"schema registry unreachable at {settings.url}: {exc}", stdout=True)


@app.command()
def register(
    ctx: typer.Context,
    registry_url: str | None = RegistryOption,
    directory: Path = DirOption,
    as_json: bool = JsonOption,
) -> None:
    """Register every schema under its subject; already-registered ones are left unchanged."""
    register_schemas(_settings(ctx, registry_url), directory, as_json)


def register_schemas(settings: RegistrySettings, directory: Path, as_json: bool) -> None:
    """Register the schemas of ``directory`` and show how each went (``register``, ``up``);
    ProblemsFound if the registry refused any."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    rows: list[Row] = []
    failed = False
    with _client(settings) as client:
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
            except NETWORK_ERRORS as exc:  # refused, DNS, timeout
                raise _unreachable(settings, exc) from exc
    _emit(rows, as_json, "schemas register")
    if failed:
        raise ProblemsFound()


@app.command()
def check(
    ctx: typer.Context,
    registry_url: str | None = RegistryOption,
    directory: Path = DirOption,
    as_json: bool = JsonOption,
) -> None:
    """Check every schema against the latest registered version; exit 1 if any would break."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    settings = _settings(ctx, registry_url)
    rows: list[Row] = []
    with _client(settings) as client:
        for subject, schema in Catalog(directory).subjects().items():
            candidate = Schema(json.dumps(schema), "AVRO")
            try:
                ok = client.test_compatibility(subject, candidate, verbose=True)
                rows.append(Row(subject, "compatible" if ok else "incompatible"))
                if not ok:
                    rows[-1].detail = _reasons(settings, subject, schema)
            except SchemaRegistryError as exc:
                if exc.error_code == 40401:
                    rows.append(Row(subject, "new", detail="not registered yet"))
                else:
                    rows.append(Row(subject, "error", detail=exc.error_message))
            except NETWORK_ERRORS as exc:
                raise _unreachable(settings, exc) from exc
    _emit(rows, as_json, "schemas check")
    if any(r.status in ("incompatible", "error") for r in rows):
        raise ProblemsFound()


def _reasons(settings: RegistrySettings, subject: str, schema: dict[str, Any]) -> str:
    """The registry's verbose messages (the client's test_compatibility returns only a bool).

    Best effort: the verdict is already known, so a failure here leaves the detail empty.
    """
    auth = None
    if settings.basic_auth_user_info is not None:
        user, _, password = settings.basic_auth_user_info.get_secret_value().partition(":")
        auth = httpx.BasicAuth(user, password)
    try:
        response = httpx.post(
            f"{settings.url.rstrip('/')}/compatibility/subjects/{quote(subject, safe='')}"
            "/versions/latest",
            params={"verbose": "true"},
            json={"schema": json.dumps(schema)},
            auth=auth,
            timeout=10,
        )
        body = response.json() if response.is_success else {}
    except (httpx.HTTPError, ValueError):
        return ""
    messages = body.get("messages", []) if isinstance(body, dict) else []
    return "; ".join(str(m) for m in messages)[:300]
