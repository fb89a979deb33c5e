"""``sealstream gateway`` and ``sealstream tokens``: run the gateway; mint and revoke JWTs."""

from __future__ import annotations

import json
import time

import typer

from ops.cli.common import LOGLEVEL, configure, settings_of
from ops.errors import UsageError

tokens_app = typer.Typer(help="JWTs: mint dev tokens, revoke tokens.", no_args_is_help=True)


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="[env SEALSTREAM_GATEWAY_HOST]"),
    port: int | None = typer.Option(None, help="[env SEALSTREAM_GATEWAY_PORT]"),
    loglevel: str | None = LOGLEVEL,
) -> None:
    """Serve the gateway in the foreground (uvicorn)."""
    import uvicorn

    from producers.app import build_gateway, create_app
    from producers.tls import uvicorn_tls

    configure(loglevel, "gateway")
    config = settings_of(ctx)
    config.kafka_role = "gateway"  # its own principal on the secured local stack
    settings = config.gateway.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    keys = config.keys
    try:
        tls = uvicorn_tls(settings, keys)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    gateway = build_gateway(settings, config.token_auth, config.kafka, config.registry, keys)
    uvicorn.run(
        create_app(gateway),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,  # uvicorn's loggers go to the process's handler (sealstream/logs.py)
        **tls,
    )


@tokens_app.command("issue")
def issue(
    ctx: typer.Context,
    subject: str = typer.Option("dev-publisher", "--sub", help="Token subject (client id)."),
    tenant: str = typer.Option("acme", help="Tenant the token acts for."),
    scope: list[str] = typer.Option(["events:write", "receipts:read"], help="Scopes (repeat)."),
    role: list[str] = typer.Option([], help="Roles (repeat); default: the policy's defaults."),
    ttl: int = typer.Option(3600, help="Lifetime in seconds."),
) -> None:
    """Mint an HS256 token with the active key (local development)."""
    from sealstream.auth import Keyring, issue_token

    auth = settings_of(ctx).token_auth
    token = issue_token(Keyring.from_settings(auth), auth, subject, tenant, scope, role, ttl)
    typer.echo(token)


@tokens_app.command("revoke")
def revoke(
    ctx: typer.Context,
    jti: str | None = typer.Option(None, help="Revoke one token by its jti."),
    sub: str | None = typer.Option(None, help="Revoke every token of a subject issued so far."),
    lift: bool = typer.Option(False, help="Lift the revocation instead."),
) -> None:
    """Revoke tokens on every gateway (through the compacted topic tokens.revoked)."""
    from sealstream.auth.revocation import publish_revocation

    if (jti is None) == (sub is None):
        raise UsageError("give exactly one of --jti or --sub", stdout=True)
    settings = settings_of(ctx)
    key = publish_revocation(settings.kafka, settings.auth, jti=jti, subject=sub, lift=lift)
    typer.echo(json.dumps({"revoked": not lift, "key": key, "at": time.time()}))
