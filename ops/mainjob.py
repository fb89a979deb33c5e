"""The main job's wiring (``sealstream up``): the environment its processes read, the services
it supervises, SQL through the ClickHouse sink's endpoint, and restarting one of them."""

from __future__ import annotations

import json
import os
import shlex
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.errors import OperatorError, UsageError
from ops.settings import Settings
from sealstream.keys import write_private
from sealstream.principals import OPERATOR, role_env
from sealstream.settings import ClickHouseSettings, GatewaySettings, StackSettings, UpSettings

SECRET_PARTS = ("PASSWORD", "SECRET", "HMAC_KEYS", "HS256_KEYS", "TOKEN", "USER_INFO")


def child_env(stack: StackSettings, up: UpSettings) -> dict[str, str]:
    """What every supervised process (and this one) reads: the stack's addresses, and every
    state directory under the stack dir unless the environment already names one."""
    d = stack.dir.resolve()
    defaults = {
        "SEALSTREAM_KEYS_DIR": str(d / "keys"),
        "SEALSTREAM_CLICKHOUSE_EMBEDDED_DIR": str(d / "clickhouse"),
        "SEALSTREAM_OBJECTS_URL": str(d / "objects"),
        "SEALSTREAM_WORKER_DATA_DIR": str(d / "worker"),
        # the local job shows results in seconds; production keeps bigger, older files
        "SEALSTREAM_SINK_OBJECTS_MAX_AGE_S": "5",
        "SEALSTREAM_SINK_OBJECTS_METRICS_PORT": str(up.objects_metrics_port),
    }
    env = {**defaults, **{k: v for k, v in os.environ.items() if k.startswith("SEALSTREAM_")}}
    env["SEALSTREAM_STACK_DIR"] = str(d)  # `restart`, `stack status` find this stack
    env["SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS"] = stack.bootstrap_servers
    # topics a process creates itself (the worker's changelog) are replicated like the stack's
    env["SEALSTREAM_KAFKA_REPLICATION_FACTOR"] = str(stack.replication_factor)
    env["SEALSTREAM_REGISTRY_URL"] = stack.registry_url
    env["SEALSTREAM_STACK_SECURITY"] = stack.security
    env.update(role_env(stack, OPERATOR))  # this process and the CLI act as the operator
    return env


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """The settings `up` gave its processes, for other commands in another shell:
    ``set -a; . .sealstream/up.env; set +a`` (secrets left out)."""
    lines = [
        f"{k}={shlex.quote(v)}"
        for k, v in sorted(env.items())
        if k.startswith("SEALSTREAM_")
        and (k.endswith("_FILE") or not any(s in k for s in SECRET_PARTS))  # paths, not secrets
    ]
    path.unlink(missing_ok=True)
    write_private(path, ("\n".join(lines) + "\n").encode())


@dataclass(frozen=True)
class GatewayAccess:
    """How `up`'s own clients (its health check, the demo) reach the gateway it runs."""

    url: str
    ca_file: str | None = None  # None: the system's CAs (and SSL_CERT_FILE) verify it
    client_cert: tuple[str, str] | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        context = ssl.create_default_context(cafile=self.ca_file)  # the host name is checked
        if self.client_cert is not None:
            context.load_cert_chain(*self.client_cert)
        return context


def gateway_access(gateway: GatewaySettings, keys_dir: Path) -> GatewayAccess:
    """Plain HTTP; or HTTPS, verified against the stack's CA when the gateway serves the stack's
    own certificate; with mutual TLS against the stack's CA, a client certificate from it
    (``CN=sealstream-up``, the subject the audit records for the demo's requests). A client
    CA of another PKI is refused here: `up` could not prove itself to its own gateway."""
    from sealstream.tls import ensure_ca, issue

    if not gateway.tls:
        return GatewayAccess(f"http://{gateway.host}:{gateway.port}")
    ca = ensure_ca(keys_dir)  # before the gateway starts, so it and `up` share one CA
    own = gateway.tls_cert_file is None
    client = None
    if gateway.tls_client_ca_file is not None:
        if Path(gateway.tls_client_ca_file).resolve() != ca.cert.resolve():
            raise UsageError(
                "sealstream up checks and uses its gateway, so with mutual TLS the client CA "
                f"must be the stack's ({ca.cert}); SEALSTREAM_GATEWAY_TLS_CLIENT_CA_FILE names "
                f"{gateway.tls_client_ca_file}. Run `sealstream gateway` yourself for another PKI."
            )
        issued = issue(keys_dir, "sealstream-up")
        client = (str(issued.cert), str(issued.key))
    return GatewayAccess(
        f"https://{gateway.host}:{gateway.port}", str(ca.cert) if own else None, client
    )


def services(settings: Settings) -> list[Any]:
    """The supervised processes: both sinks, the workers, the gateway (started in order)."""
    from ops.supervisor import Service

    up, gateway, clickhouse = settings.up, settings.gateway, settings.clickhouse
    stack = settings.stack
    access = gateway_access(gateway, settings.keys.dir)
    workers = [
        Service(
            f"worker-{i + 1}",
            ["worker"],
            {
                **role_env(stack, "worker"),
                "SEALSTREAM_WORKER_METRICS_PORT": str(up.worker_metrics_port + i),
                "SEALSTREAM_WORKER_DATA_DIR": f"{os.environ['SEALSTREAM_WORKER_DATA_DIR']}-{i + 1}",
            },
            f"http://127.0.0.1:{up.worker_metrics_port + i}/metrics",
        )
        for i in range(up.workers)
    ]
    return [
        Service("sink-clickhouse", ["sink", "clickhouse"],
                {**role_env(stack, "sink-clickhouse"),
                 "SEALSTREAM_SINK_INSTANCE_ID": "up-sink-clickhouse"},
                f"http://{clickhouse.query_host}:{clickhouse.query_port}/healthz"),
        Service("sink-objects", ["sink", "objects"],
                {**role_env(stack, "sink-objects"),
                 "SEALSTREAM_SINK_INSTANCE_ID": "up-sink-objects"},
                f"http://127.0.0.1:{up.objects_metrics_port}/metrics"),
        *workers,
        Service("gateway", ["gateway"], role_env(stack, "gateway"), f"{access.url}/healthz",
                health_tls=access.ssl_context()),
    ]  # fmt: skip


def endpoint_query(clickhouse: ClickHouseSettings) -> Callable[[str], list[list[Any]]]:
    """SQL -> rows through the ClickHouse sink's query endpoint, as the local auditor."""
    from sinks.clickhouse.access import endpoint_rows, local_token

    url = f"http://{clickhouse.query_host}:{clickhouse.query_port}/v1/query"
    token = local_token("*", "auditor")
    return lambda sql: endpoint_rows(url, token, sql)


def _running(state_file: Path) -> dict[str, Any]:
    try:
        return {s["name"]: s for s in json.loads(state_file.read_text())["services"]}
    except (OSError, ValueError, KeyError):
        return {}


def restart(state_file: Path, name: str, timeout_s: float) -> tuple[Any, Any]:
    """SIGTERM one supervised process of a running `up` (its state in ``state_file``) and wait
    until the supervisor runs it again: (old pid, new pid)."""
    current = _running(state_file)
    if name not in current:
        raise UsageError(
            f"no process {name!r} in {state_file}: {sorted(current) or 'is up running?'}",
            stdout=True,
        )
    old = current[name]["pid"]
    if old:
        os.kill(int(old), signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _running(state_file).get(name, {})
        if now.get("running") and now.get("pid") not in (None, old):
            return old, now["pid"]
        time.sleep(0.5)
    raise OperatorError(f"{name} not back after {timeout_s:.0f} s", stdout=True)
