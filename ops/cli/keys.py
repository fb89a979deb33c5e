"""``sealstream keys``: list and rotate the local keyrings (secrets are never printed)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ops.cli.common import settings_of
from ops.errors import UsageError
from sealstream.keys import HmacKeyring, load_hmac_keyring, save_hmac_keyring
from sealstream.settings import KeySettings

app = typer.Typer(help="Keyrings: list key ids, rotate a keyring.", no_args_is_help=True)
console = Console()


class Keyring(StrEnum):
    signing = "signing"  # event signatures, chains, checkpoints (workers; verify)
    jwt = "jwt"  # HS256 tokens (gateway, dev tokens)
    mask = "mask"  # keyed pseudonyms of PII (workers)


FILES = {Keyring.signing: "hmac.json", Keyring.jwt: "jwt-hs256.json", Keyring.mask: "mask.json"}
READERS = {
    Keyring.signing: "workers sign with it; verify and audit check with every key id in it",
    Keyring.jwt: "the gateway and the query endpoint verify tokens with it (they re-read it when "
    "a token names a new key id: no restart); `tokens issue` signs with the active key",
    Keyring.mask: "workers derive pseudonyms with it (a new key gives new pseudonyms)",
}


def _describe(which: Keyring, ring: HmacKeyring, settings: KeySettings) -> dict[str, Any]:
    return {
        "keyring": which.value,
        "file": str(settings.dir / FILES[which]),
        "active": ring.active,
        "key_ids": sorted(ring.keys),
        "used_by": READERS[which],
    }


@app.command("list")
def list_keys(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Each keyring's file, active key id and every key id it still verifies with."""
    settings = settings_of(ctx).keys
    rows = [_describe(w, load_hmac_keyring(settings, FILES[w]), settings) for w in Keyring]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("keyring", "active", "key ids", "file")
    for row in rows:
        table.add_row(
            str(row["keyring"]),
            str(row["active"]),
            ", ".join(row["key_ids"]),
            str(row["file"]),
        )
    console.print(table)


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    which: Keyring = typer.Argument(..., help="signing, jwt or mask."),
    kid: str | None = typer.Option(None, help="Id of the new key (default: generated)."),
    retire: list[str] = typer.Option(
        [], help="Drop these old key ids (repeat). What they signed then verifies as unknown_key."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Make a new key active; old keys stay (they still verify) unless retired. Processes read
    keyrings at start: restart the ones that use it (`sealstream restart worker-1`)."""
    settings = settings_of(ctx).keys
    ring = load_hmac_keyring(settings, FILES[which]).rotated(kid)
    missing = [k for k in retire if k not in ring.keys]
    if missing or ring.active in retire:
        raise UsageError(
            f"cannot retire {missing or [ring.active]}: unknown or active", stdout=True
        )
    ring = HmacKeyring(ring.active, {k: v for k, v in ring.keys.items() if k not in retire})
    save_hmac_keyring(settings, ring, FILES[which])
    described = _describe(which, ring, settings)
    if as_json:
        typer.echo(json.dumps(described))
    else:
        console.print(
            f"{which.value}: active key is now {ring.active}; verifies {described['key_ids']}"
        )
        console.print(f"restart what uses it: {READERS[which]}")


@app.command("client-cert")
def client_cert(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The client's name: its certificate's CN."),
) -> None:
    """Issue a TLS client certificate from the local stack's CA, for a gateway with mutual
    TLS (SEALSTREAM_GATEWAY_TLS_CLIENT_CA_FILE=<keys dir>/tls/ca.pem); prints the files."""
    import re

    from sealstream.tls import ensure_ca, issue

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name) or name in ("ca", "gateway"):
        raise UsageError(
            "a client name is 1-64 letters, digits, '.', '_' or '-', not ca or gateway", stdout=True
        )
    keys = settings_of(ctx).keys.dir
    issued = issue(keys, name)
    typer.echo(
        json.dumps(
            {"cert": str(issued.cert), "key": str(issued.key), "ca": str(ensure_ca(keys).cert)}
        )
    )
