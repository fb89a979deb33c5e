"""``sealstream receipts verify``: check receipts offline, with nothing but the gateway's
published public keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from ops.cli.common import safe
from ops.errors import ProblemsFound, Unavailable, UsageError

app = typer.Typer(help="Receipts the gateway signed: verify them offline.", no_args_is_help=True)


def _read_json_documents(source: str) -> list[Any]:
    """A JSON document, or JSON lines (one document a line)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    except RecursionError as exc:  # nested past what the parser follows
        raise UsageError(f"{source}: JSON nested too deeply for receipts") from exc
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            documents.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{source}:{number}: not JSON ({exc.msg})") from exc
        except RecursionError as exc:
            raise UsageError(f"{source}:{number}: JSON nested too deeply for receipts") from exc
    return documents


def _load_keys(keys: Path | None, gateway: str | None) -> dict[str, Any]:
    if (keys is None) == (gateway is None):
        raise UsageError(
            "give the gateway's public keys: --keys FILE (the JSON of "
            "/.well-known/sealstream/keys, saved) or --gateway URL"
        )
    if keys is not None:
        try:
            jwks = json.loads(keys.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read the key set {keys}: {exc}") from exc
    else:
        import httpx

        url = f"{str(gateway).rstrip('/')}/.well-known/sealstream/keys"
        try:
            response = httpx.get(url, timeout=10)
            response.raise_for_status()
            jwks = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"cannot fetch the gateway's keys from {url}: {exc}") from exc
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise UsageError('the key set must be a JWKS: {"keys": [...]}')
    return jwks


@app.command("verify")
def verify(
    file: str = typer.Argument(
        ...,
        help="Receipts as JSON or JSON lines: receipts, or the gateway's responses; - reads stdin.",
    ),
    keys: Path | None = typer.Option(
        None, "--keys", help="The gateway's public keys (JWKS), saved from its well-known URL."
    ),
    gateway: str | None = typer.Option(None, help="Fetch the public keys from this gateway."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check every receipt's signature (and, for format 2, its Merkle inclusion proof) with
    the published keys only. Exit 0 when all are valid, 1 when any is not."""
    from producers.receipts import receipts_in, verify_receipt

    jwks = _load_keys(keys, gateway)
    documents = _read_json_documents(file)
    try:
        receipts = [r for doc in documents for r in receipts_in(doc)]
    except ValueError as exc:
        raise UsageError(f"{file}: {exc}") from exc
    if not receipts:
        raise UsageError(f"{file}: no receipts in it")
    results = [
        {
            "event_id": r.get("event_id"),
            "format": r.get("v", 1),
            "valid": verify_receipt(r, jwks),
        }
        for r in receipts
    ]
    bad = [r for r in results if not r["valid"]]
    if as_json:
        typer.echo(json.dumps({"receipts": results, "valid": len(results) - len(bad)}))
    else:
        console = Console()
        for result in bad:
            where = safe(f"{result['event_id']} (format {result['format']})")
            console.print(Text.assemble(("INVALID", "red"), " ", where))
        console.print(f"{len(results) - len(bad)} of {len(results)} receipts valid")
    if bad:
        raise ProblemsFound(f"{len(bad)} receipt(s) do not verify", stdout=True)
