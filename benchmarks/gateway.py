"""Gateway benchmark: events/s and ack latency by batch size and concurrency, and auth cost.

    python -m benchmarks.gateway [--seconds 5] [--clients 1,25,100] [--batches 1,100]

Starts its own local stack (under benchmarks/results/tmp/, ports apart from the defaults) and
the gateway as a separate process (`sealstream gateway`), then drives it with asyncio httpx
clients. Every request carries a valid token; every event is valid, so each one is produced
to Kafka with acks=all before its 202. Writes benchmarks/results/gateway.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress
from rich.table import Table

from benchmarks.common import RESULTS, bench_stack, console, machine
from producers.auth import Keyring, TokenVerifier, issue_token
from sealstream.cli.gateway import auth_settings
from sealstream.settings import KeySettings
from sealstream.stack.local import LocalStack


def event(i: int) -> dict[str, Any]:
    return {
        "event_type": "page_view",
        "tenant": "acme",
        "occurred_at": "2026-11-22T10:00:00Z",
        "payload": {"session_id": f"s-{i % 1000}", "url": f"/p/{i}", "user_id": f"u-{i % 97}"},
    }


async def drive(url: str, token: str, clients: int, batch: int, seconds: float) -> dict[str, Any]:
    """``clients`` concurrent connections posting for ``seconds``.

    The load generator is aiohttp: httpx's connection pool collapses past ~10 concurrent
    connections (measured here: /healthz at 25 connections, 212 req/s with httpx against
    6078 req/s with aiohttp), which would measure the client instead of the gateway.
    """
    import aiohttp

    body = json.dumps({"events": [event(i) for i in range(batch)]} if batch > 1 else event(0))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with client.post("/v1/events", data=body, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ok = statuses.get(202, 0)
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "clients": clients,
        "batch": batch,
        "requests": len(latencies),
        "events_per_s": round(ok * batch / elapsed, 1),
        "success_rate": round(ok / max(1, len(latencies)), 4),
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "statuses": statuses,
    }


def auth_cost(keys: KeySettings) -> dict[str, float]:
    """Microseconds per verify, with the verified-token cache and without it."""
    auth = auth_settings(keys)
    keyring = Keyring.from_settings(auth)
    token = issue_token(keyring, auth, "bench", "acme", ["events:write"])
    cached = TokenVerifier(auth, keyring)
    uncached = TokenVerifier(auth.model_copy(update={"cache_size": 0}), keyring)
    n = 20_000
    with_cache = min(timeit.repeat(lambda: cached.verify(token), number=n, repeat=5)) / n
    without = min(timeit.repeat(lambda: uncached.verify(token), number=n // 10, repeat=5)) / (
        n // 10
    )
    return {
        "with_cache_us": round(with_cache * 1e6, 2),
        "without_cache_us": round(without * 1e6, 2),
    }


def start_gateway(
    stack: LocalStack, keys: KeySettings, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "SEALSTREAM_REGISTRY_URL": stack.registry_url,
        "SEALSTREAM_GATEWAY_PORT": str(port),
        "SEALSTREAM_GATEWAY_POLICY_FILE": str(Path.cwd() / "config" / "policy.yaml"),
        "SEALSTREAM_GATEWAY_TENANT_RATE_PER_S": "1000000",
        "SEALSTREAM_GATEWAY_TENANT_BURST": "1000000",
        "SEALSTREAM_GATEWAY_CLIENT_RATE_PER_S": "1000000",
        "SEALSTREAM_GATEWAY_CLIENT_BURST": "1000000",
        "SEALSTREAM_KEYS_DIR": str(keys.dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealstream.cli", "gateway"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited; see {log}")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"gateway did not become ready; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,25,100")
    parser.add_argument("--batches", default="1,100")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    batches = [int(b) for b in args.batches.split(",")]

    work = RESULTS / "tmp" / "gateway"
    work.mkdir(parents=True, exist_ok=True)
    keys = KeySettings(dir=work / "keys")
    stack = bench_stack("gateway", 29192)
    port = 28180
    proc = start_gateway(stack, keys, port, work / "gateway.log")
    auth = auth_settings(keys)
    token = issue_token(
        Keyring.from_settings(auth), auth, "bench", "acme", ["events:write"], ttl_s=3600
    )
    rows = []
    try:
        asyncio.run(drive(f"http://127.0.0.1:{port}", token, 4, 10, 1.0))  # warm-up
        with Progress(console=console) as progress:
            task = progress.add_task("scenarios", total=len(clients) * len(batches))
            for batch in batches:
                for n in clients:
                    rows.append(
                        asyncio.run(
                            drive(f"http://127.0.0.1:{port}", token, n, batch, args.seconds)
                        )
                    )
                    progress.advance(task)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        stack.down()
    costs = auth_cost(keys)
    result = {
        "benchmark": "gateway",
        "machine": machine(),
        "seconds_per_scenario": args.seconds,
        "scenarios": rows,
        "auth": costs,
        "note": "gateway (1 uvicorn process), Kafka and the load generator share the machine",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title="gateway: POST /v1/events (acks=all)")
    for col in ("batch", "clients", "events/s", "p50 ms", "p95 ms", "p99 ms", "success"):
        table.add_column(col, justify="right")
    lines = [
        "| batch | clients | events/s | p50 ms | p95 ms | p99 ms | success |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            r["batch"],
            r["clients"],
            r["events_per_s"],
            r["p50_ms"],
            r["p95_ms"],
            r["p99_ms"],
            f"{r['success_rate']:.2%}",
        ]
        table.add_row(*map(str, cells))
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    console.print(table)
    console.print(
        f"auth per request: {costs['with_cache_us']} us with the token cache, "
        f"{costs['without_cache_us']} us without"
    )
    m = result["machine"]
    (RESULTS / "gateway.md").write_text(
        f"# Gateway benchmark\n\nMachine: {m['cpu_count']} CPUs, {m['memory_gib']} GiB, "
        f"{m['platform']}, Python {m['python']}. {result['note']}.\n\n"
        + "\n".join(lines)
        + f"\n\nAuth per request: {costs['with_cache_us']} µs with the verified-token cache, "
        f"{costs['without_cache_us']} µs without (HS256 verify + claim checks).\n"
    )


if __name__ == "__main__":
    main()
