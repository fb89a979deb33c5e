"""Naive baseline: the "seed architecture" the gateway replaced, on the same broker, machine and
load generator, so the gateway's figures have something to be compared with.

    python -m benchmarks.baseline [--seconds 5] [--clients 1,25,100,250] [--batches 1,10,100]
                                  [--runs 3]

One uvicorn process serving FastAPI (the gateway's framework) with a plain ``def`` handler
(FastAPI runs it in its thread pool, as a naive service would); each request decodes the JWT
with pyjwt (no cache), validates every event's payload against its Avro schema (fastavro),
encodes it (Confluent wire format), produces it with confluent-kafka (acks=all) and calls
``producer.flush()`` before answering 202. No authorization, rate limits, idempotence,
receipts or audit decisions: less work per event than the gateway does. Writes
benchmarks/results/baseline.json and .md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BASELINE_PORT,
    RESULTS,
    STACK_PORT,
    bench_stack,
    console,
    describe,
    kafka_config,
    kafka_env,
    machine,
    median_of,
    save,
    start_service,
)
from benchmarks.gateway import BATCHES, CLIENTS, matrix, table_lines
from ops.stack.local import LocalStack
from sealstream.settings import KafkaSettings, KeySettings, RegistrySettings

TOPIC = "bench.baseline"


def create_app(bootstrap: str, registry_url: str, keys_dir: Path) -> Any:
    """The seed service: JWT decode, Avro validate, produce, flush, 202."""
    import fastavro
    import jwt
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from fastapi import Body, FastAPI, Header, HTTPException
    from fastavro.validation import ValidationError, validate

    from schemas.catalog import Catalog, full_name
    from sealstream.auth import Keyring, auth_settings

    auth = auth_settings(KeySettings(dir=keys_dir))
    _, secret = Keyring.from_settings(auth).signing_secret()
    catalog = Catalog()
    schemas: dict[str, tuple[bytes, Any]] = {}
    with SchemaRegistryClient(RegistrySettings(url=registry_url).client_config()) as client:
        for event_type in catalog.event_types():
            schema = catalog.payload_schema(event_type)
            schema_id = client.register_schema(
                f"{TOPIC}-{full_name(schema)}", Schema(json.dumps(schema), "AVRO")
            )
            schemas[event_type] = (
                b"\0" + schema_id.to_bytes(4, "big"),
                fastavro.parse_schema(schema),
            )
    # the rest of the client's settings (SASL_SSL on a secured stack) from the environment
    producer = Producer(KafkaSettings(bootstrap_servers=bootstrap).client_config(acks="all"))
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/events", status_code=202)
    def publish(
        body: dict[str, Any] = Body(...), authorization: str = Header("")
    ) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                authorization.removeprefix("Bearer "),
                secret,
                algorithms=["HS256"],
                audience=auth.audience,
                issuer=auth.issuer,
            )
        except jwt.InvalidTokenError as exc:
            raise HTTPException(401, f"invalid token: {exc}") from exc
        events = body.get("events", [body])
        for event in events:
            if (
                event.get("tenant") != claims.get("tenant")
                or event.get("event_type") not in schemas
            ):
                raise HTTPException(422, "unknown event type or tenant")
            prefix, schema = schemas[event["event_type"]]
            try:
                validate(event["payload"], schema, raise_errors=True)
            except ValidationError as exc:
                raise HTTPException(422, str(exc)) from exc
            out = io.BytesIO()
            out.write(prefix)
            fastavro.schemaless_writer(out, schema, event["payload"])
            producer.produce(TOPIC, out.getvalue(), key=event["tenant"].encode())
        producer.flush()
        return {"accepted": len(events)}

    return app


def serve(port: int, bootstrap: str, registry_url: str, keys_dir: Path) -> None:
    import uvicorn

    app = create_app(bootstrap, registry_url, keys_dir)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start(stack: LocalStack, keys_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(kafka_config(stack))
    if TOPIC not in admin.list_topics(timeout=10).topics:
        for future in admin.create_topics([NewTopic(TOPIC, 6, 1)]).values():
            future.result(30)
    argv = [sys.executable, "-m", "benchmarks.baseline", "serve", "--port", str(port),
            "--bootstrap", stack.bootstrap, "--registry-url", stack.registry_url,
            "--keys-dir", str(keys_dir)]  # fmt: skip
    # the baseline registers its own schemas: with the stack's operator credential
    env = {
        **os.environ,
        **kafka_env(stack),
        "SEALSTREAM_REGISTRY_BASIC_AUTH_FILE": str(stack.settings.registry_operator_file),
    }
    return start_service(argv, env, f"http://127.0.0.1:{port}/healthz", log, "baseline service")


def run(
    stack: LocalStack | None = None,
    *,
    seconds: float = 5.0,
    clients: Sequence[int] = CLIENTS,
    batches: Sequence[int] = BATCHES,
    runs: int = 3,
    port: int = BASELINE_PORT,
) -> dict[str, Any]:
    """The gateway's matrix against the naive service; medians per cell."""
    from sealstream.auth import Keyring, auth_settings, issue_token

    work = RESULTS / "tmp" / "baseline"
    work.mkdir(parents=True, exist_ok=True)
    keys = KeySettings(dir=work / "keys")
    auth = auth_settings(keys)
    token = issue_token(
        Keyring.from_settings(auth), auth, "bench", "acme", ["events:write"], ttl_s=3600
    )
    own = stack is None
    stack = stack or bench_stack("baseline", STACK_PORT)
    try:
        proc = start(stack, keys.dir, port, work / "baseline.log")
        try:
            cells = matrix(f"http://127.0.0.1:{port}", token, "baseline", seconds, clients,
                           batches, runs)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        if own:
            stack.down()
    return {
        "benchmark": "baseline",
        "machine": machine(),
        "seconds_per_scenario": seconds,
        "n_runs": runs,
        "scenarios": [median_of(r) for r in cells.values()],
        "note": "naive service: FastAPI sync handler on one uvicorn process; pyjwt decode (no "
        "cache), fastavro validate + encode, confluent-kafka produce (acks=all) and flush() per "
        "request before the 202; no authorization, idempotence, receipts or audit records",
    }


def write(result: dict[str, Any], out: Path = RESULTS) -> None:
    save(
        out,
        "baseline",
        result,
        f"# Naive baseline\n\nMachine: {describe(result['machine'])}. "
        f"{result['seconds_per_scenario']} s per scenario, {result['n_runs']} run(s).\n\n"
        + "\n".join(table_lines(result["scenarios"]))
        + f"\n\n{result['note']}. Same broker, same load generator as the gateway benchmark "
        "(benchmarks/gateway.py).\n",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="run the naive service in the foreground")
    srv.add_argument("--port", type=int, default=BASELINE_PORT)
    srv.add_argument("--bootstrap", required=True)
    srv.add_argument("--registry-url", required=True)
    srv.add_argument("--keys-dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.bootstrap, args.registry_url, args.keys_dir)
        return
    result = run(
        seconds=args.seconds,
        clients=[int(c) for c in args.clients.split(",")],
        batches=[int(b) for b in args.batches.split(",")],
        runs=args.runs,
    )
    write(result)
    console.print((RESULTS / "baseline.md").read_text())


if __name__ == "__main__":
    main()
