"""Gateway benchmark: events/s and ack latency by batch size and concurrency, and the cost of
each security step (JWT verify, authorization, receipt signing) in microseconds.

    python -m benchmarks.gateway [--seconds 5] [--clients 1,25,100,250] [--batches 1,10,100]
                                 [--runs 3]

Starts its own local stack (under benchmarks/results/tmp/, ports apart from the defaults) and
the gateway as a separate process (`sealstream gateway`), then drives it with asyncio aiohttp
clients. Every request carries a valid token; every event is valid, so each one is produced
to Kafka with acks=all before its 202. Writes benchmarks/results/gateway.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import timeit
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import gateway_cpu
from benchmarks.common import (
    GATEWAY_PORT,
    RESULTS,
    STACK_PORT,
    bench_stack,
    console,
    describe,
    kafka_env,
    machine,
    median_of,
    save,
    start_service,
    task,
)
from ops.stack.local import LocalStack
from producers.policy import PolicyStore
from producers.receipts import ReceiptIssuer
from sealstream.auth import Keyring, TokenVerifier, auth_settings, issue_token
from sealstream.keys import load_hmac_keyring, load_receipt_signer
from sealstream.settings import KeySettings

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = (1, 25, 100, 250)
NOW = dt.datetime.now(dt.UTC).isoformat()  # inside the gateway's occurred_at window
BATCHES = (1, 10, 100)
TREE_SIZES = (1, 10, 100)  # receipts per request: leaves of one signed tree


def event(i: int) -> dict[str, Any]:
    return {
        "event_type": "page_view",
        "tenant": "acme",
        "occurred_at": NOW,
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
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with client.post("/v1/events", data=body, headers=headers) as response:
                        await response.read()
                    status = str(response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:  # counted, not fatal
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ok = statuses.get("202", 0)
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


def security_cost(keys: KeySettings, repeat: int = 5) -> dict[str, Any]:
    """Microseconds per call, in this process (timeit), of each security step of a request:
    JWT verify with the verified-token cache and without it, the authorization decision
    (producers.policy, with its decision cache and evaluated afresh) and signing one receipt
    (producers.receipts: Ed25519 signature + HMAC seal). Each figure is the median of
    ``repeat`` timeit repeats; the repeats are kept under ``runs``."""
    auth = auth_settings(keys)
    keyring = Keyring.from_settings(auth)
    token = issue_token(keyring, auth, "bench", "acme", ["events:write"])
    cached = TokenVerifier(auth, keyring)
    uncached = TokenVerifier(auth.model_copy(update={"cache_size": 0}), keyring)
    principal = cached.verify(token)
    store = PolicyStore(ROOT / "config" / "policy.yaml")
    policy = store.policy
    issuer = ReceiptIssuer(load_receipt_signer(keys), load_hmac_keyring(keys))
    receipt: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "tenant": "acme",
        "event_type": "page_view",
        "payload_sha256": "0" * 64,
        "received_at": "2026-11-22T10:00:00.000Z",
        "topic": "events.raw",
        "partition": 0,
        "offset": 12345,
    }
    steps: dict[str, tuple[Callable[[], object], int]] = {
        "jwt_verify_cached_us": (lambda: cached.verify(token), 20_000),
        "jwt_verify_uncached_us": (lambda: uncached.verify(token), 2_000),
        "authz_decision_cached_us": (
            lambda: store.decide(principal, "publish", "page_view", "acme"),
            20_000,
        ),
        "authz_decision_uncached_us": (
            lambda: policy.decide(principal, "publish", "page_view", "acme"),
            20_000,
        ),
        # format 1: one Ed25519 signature and one seal per event
        "receipt_sign_us": (lambda: issuer.issue_v1(**receipt), 2_000),
    }
    # format 2: one signed Merkle tree head per request; per event at each request size
    for leaves in TREE_SIZES:
        batch = [{**receipt, "offset": i} for i in range(leaves)]
        steps[f"receipt_tree_{leaves}_us"] = (
            functools.partial(issuer.issue_tree, batch, "2026-11-22T10:00:00.000Z"),
            max(20, 2_000 // leaves),
        )
    figures: dict[str, Any] = {}
    runs: dict[str, list[float]] = {}
    for name, (call, number) in steps.items():
        per = int(name.split("_")[2]) if name.startswith("receipt_tree_") else 1
        times = [t / number / per * 1e6 for t in timeit.repeat(call, number=number, repeat=repeat)]
        runs[name] = [round(t, 2) for t in times]
        figures[name] = round(statistics.median(times), 2)
    figures["per_event_cached_us"] = round(
        figures["jwt_verify_cached_us"]
        + figures["authz_decision_cached_us"]
        + figures[f"receipt_tree_{TREE_SIZES[-1]}_us"],
        2,
    )
    figures["runs"] = runs
    return figures


def start_gateway(
    stack: LocalStack, keys: KeySettings, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **kafka_env(stack),
        "SEALSTREAM_REGISTRY_URL": stack.registry_url,
        "SEALSTREAM_GATEWAY_PORT": str(port),
        "SEALSTREAM_GATEWAY_POLICY_FILE": str(ROOT / "config" / "policy.yaml"),
        "SEALSTREAM_GATEWAY_TENANT_RATE_PER_S": "1000000",
        "SEALSTREAM_GATEWAY_TENANT_BURST": "1000000",
        "SEALSTREAM_GATEWAY_CLIENT_RATE_PER_S": "1000000",
        "SEALSTREAM_GATEWAY_CLIENT_BURST": "1000000",
        "SEALSTREAM_KEYS_DIR": str(keys.dir),
    }
    argv = [sys.executable, "-m", "ops.cli", "gateway"]
    return start_service(argv, env, f"http://127.0.0.1:{port}/readyz", log, "gateway")


def run(
    stack: LocalStack | None = None,
    *,
    seconds: float = 5.0,
    clients: Sequence[int] = CLIENTS,
    batches: Sequence[int] = BATCHES,
    runs: int = 3,
    port: int = GATEWAY_PORT,
    kafka_port: int = STACK_PORT,
) -> dict[str, Any]:
    """The matrix ``runs`` times (round-robin, so drift spreads over every cell) against a
    ``sealstream gateway`` on ``stack`` (its own stack when None); medians per cell."""
    work = RESULTS / "tmp" / "gateway"
    work.mkdir(parents=True, exist_ok=True)
    keys = KeySettings(dir=work / "keys")
    own = stack is None
    stack = stack or bench_stack("gateway", kafka_port)
    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    try:
        proc = start_gateway(stack, keys, port, work / "gateway.log")
        auth = auth_settings(keys)
        token = issue_token(
            Keyring.from_settings(auth), auth, "bench", "acme", ["events:write"], ttl_s=3600
        )
        url = f"http://127.0.0.1:{port}"
        try:
            cells = matrix(url, token, "gateway", seconds, clients, batches, runs)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        if own:
            stack.down()
    return {
        "benchmark": "gateway",
        "machine": machine(),
        "seconds_per_scenario": seconds,
        "n_runs": runs,
        "scenarios": [median_of(r) for r in cells.values()],
        "security": security_cost(keys, max(3, runs)),
        "cpu": gateway_cpu.run(runs=max(3, runs)),
        "note": "gateway (1 uvicorn process), Kafka and the load generator share the machine; "
        "every figure is the median of the runs (kept under `runs`)",
    }


def matrix(
    url: str,
    token: str,
    label: str,
    seconds: float,
    clients: Sequence[int],
    batches: Sequence[int],
    runs: int,
) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Every (batch, clients) cell ``runs`` times against ``url``; the per-run figures."""
    asyncio.run(drive(url, token, 4, 10, 1.0))  # warm-up: connections, caches, the producer
    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    with task(f"{label}: batch x clients", total=runs * len(clients) * len(batches)) as bar:
        for _ in range(runs):
            for batch in batches:
                for n in clients:
                    cells.setdefault((batch, n), []).append(
                        asyncio.run(drive(url, token, n, batch, seconds))
                    )
                    bar.advance()
    return cells


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| batch | clients | events/s | p50 ms | p95 ms | p99 ms | success |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [r["batch"], r["clients"], f"{r['events_per_s']:,.0f}", r["p50_ms"], r["p95_ms"],
                 r["p99_ms"], f"{r['success_rate']:.2%}"]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def write(result: dict[str, Any], out: Path = RESULTS) -> None:
    """benchmarks/results/gateway.json and .md."""
    sec = result["security"]
    save(
        out,
        "gateway",
        result,
        f"# Gateway benchmark\n\nMachine: {describe(result['machine'])}. {result['note']}. "
        f"{result['seconds_per_scenario']} s per scenario, {result['n_runs']} run(s).\n\n"
        + "\n".join(table_lines(result["scenarios"]))
        + "\n\n## Security cost per request, in process (timeit, µs)\n\n"
        "| step | µs |\n|---|---:|\n"
        f"| JWT verify, verified-token cache hit | {sec['jwt_verify_cached_us']} |\n"
        f"| JWT verify, no cache (HS256 + claim checks) | {sec['jwt_verify_uncached_us']} |\n"
        f"| authorization decision, decision cache hit | {sec['authz_decision_cached_us']} |\n"
        f"| authorization decision, evaluated (producers/policy.py) | "
        f"{sec['authz_decision_uncached_us']} |\n"
        f"| receipt, format 1: Ed25519 + HMAC seal per event | {sec['receipt_sign_us']} |\n"
        + "".join(
            f"| receipt, format 2: one signed tree of {n}, per event | "
            f"{sec[f'receipt_tree_{n}_us']} |\n"
            for n in TREE_SIZES
            if f"receipt_tree_{n}_us" in sec
        )
        + f"| per event with warm caches (verify + decide + tree of {TREE_SIZES[-1]}) | "
        f"{sec['per_event_cached_us']} |\n" + cpu_lines(result.get("cpu")),
    )


def cpu_lines(cpu: dict[str, Any] | None) -> str:
    """The in-process CPU table (benchmarks/gateway_cpu.py), when the run has it."""
    if not cpu:
        return ""
    rows = "".join(f"| {batch} | {us} |\n" for batch, us in cpu["cpu_us_per_event"].items())
    return (
        "\n## Gateway CPU per event, Kafka replaced by an instant ack (µs)\n\n"
        f"{cpu['note']}; one request at a time.\n\n| events per request | CPU µs per event |\n"
        "|---:|---:|\n" + rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kafka-port", type=int, default=STACK_PORT, help="Kafka of the stack")
    parser.add_argument("--port", type=int, default=GATEWAY_PORT, help="HTTP of the gateway")
    args = parser.parse_args()
    result = run(
        seconds=args.seconds,
        clients=[int(c) for c in args.clients.split(",")],
        batches=[int(b) for b in args.batches.split(",")],
        runs=args.runs,
        port=args.port,
        kafka_port=args.kafka_port,
    )
    write(result)
    console.print((RESULTS / "gateway.md").read_text())


if __name__ == "__main__":
    main()
