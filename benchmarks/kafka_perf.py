"""Kafka's own ceiling on this machine: Apache Kafka's ProducerPerformance tool (Java client,
acks=all, unthrottled) against the bench broker, so the gateway's and the baseline's events/s
can be read against what the broker takes from a client that does nothing else.

    python -m benchmarks.kafka_perf [--records 200000] [--record-size 512] [--runs 3]

The jars are the ones the local stack runs (``ops.stack.kafka.libs_dir``). Writes
benchmarks/results/kafka.json and .md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PLAIN_STACK_PORT,
    RESULTS,
    STACK_PORT,
    bench_stack,
    console,
    describe,
    kafka_config,
    machine,
    median_of,
    save,
    task,
)
from ops.stack.kafka import LOG4J2, java, libs_dir
from ops.stack.local import LocalStack

# "200000 records sent, 91324.2 records/sec (44.59 MB/sec), 333.43 ms avg latency, 800.00 ms
#  max latency, 300 ms 50th, 700 ms 95th, 780 ms 99th, 795 ms 99.9th."
SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th"
)


def parse_summary(output: str) -> dict[str, float]:
    """The last summary line of ProducerPerformance (the totals; earlier lines are windows)."""
    found = list(SUMMARY.finditer(output))
    if not found:
        raise ValueError(f"no ProducerPerformance summary in its output:\n{output[-2000:]}")
    m = found[-1]
    return {
        "records": int(m["records"]),
        "records_per_s": float(m["rate"]),
        "mb_per_s": float(m["mb"]),
        "avg_ms": float(m["avg"]),
        "max_ms": float(m["max"]),
        "p50_ms": float(m["p50"]),
        "p95_ms": float(m["p95"]),
        "p99_ms": float(m["p99"]),
    }


def producer_config(stack: LocalStack) -> Path:
    """ProducerPerformance's client properties for ``stack`` as its admin: SASL_SSL and the
    stack's CA when it is secured. In an owner-only file, so the password is in no process's
    arguments."""
    from sealstream.keys import write_private

    kafka = stack.settings.kafka_settings("admin")
    lines = [f"bootstrap.servers={stack.bootstrap}", "acks=all"]
    if stack.settings.security == "sasl_ssl":
        config = kafka.client_config()
        lines += [
            "security.protocol=SASL_SSL",
            f"sasl.mechanism={config['sasl.mechanism']}",
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{config["sasl.username"]}" password="{config["sasl.password"]}";',
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={kafka.ssl_ca_location}",
        ]
    path = stack.settings.keys_dir / "bench-producer.properties"
    path.unlink(missing_ok=True)
    write_private(path, ("\n".join(lines) + "\n").encode())
    return path


def producer_performance(stack: LocalStack, topic: str, records: int, size: int) -> dict[str, Any]:
    libs = libs_dir(stack.settings)
    argv = [
        java(), "-Xmx512m", "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={LOG4J2}",
        "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
        "--num-records", str(records), "--record-size", str(size), "--throughput", "-1",
        "--producer.config", str(producer_config(stack)),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"ProducerPerformance failed: {done.stderr[-2000:]}")
    return parse_summary(done.stdout)


def _one(stack: LocalStack, records: int, size: int) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"bench-perf-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(kafka_config(stack))
    for future in admin.create_topics([NewTopic(topic, 6, 1)]).values():
        future.result(30)
    return producer_performance(stack, topic, records, size)


def run(
    stack: LocalStack | None = None, *, records: int = 200_000, size: int = 512, runs: int = 3
) -> dict[str, Any]:
    """On the (secured) bench stack and on a PLAINTEXT twin started beside it, alternately in
    the same run: the cost of TLS and SASL is the ratio of the two."""
    own = stack is None
    stack = stack or bench_stack("kafka", STACK_PORT)
    plain = bench_stack("kafka-plaintext", PLAIN_STACK_PORT, security="plaintext")
    per_run: dict[str, list[dict[str, Any]]] = {"secured": [], "plaintext": []}
    try:
        with task("Kafka ProducerPerformance, secured and PLAINTEXT", total=2 * runs) as bar:
            for _ in range(runs):
                for label, which in (("secured", stack), ("plaintext", plain)):
                    per_run[label].append(_one(which, records, size))
                    bar.advance()
    finally:
        plain.down()
        if own:
            stack.down()
    secured, plaintext = median_of(per_run["secured"]), median_of(per_run["plaintext"])
    return {
        "benchmark": "kafka",
        "machine": machine(),
        "record_size": size,
        "n_runs": runs,
        "security": stack.settings.security,
        **secured,
        "plaintext": plaintext,
        "secured_vs_plaintext": round(secured["records_per_s"] / plaintext["records_per_s"], 2),
        "note": "org.apache.kafka.tools.ProducerPerformance (Java producer, acks=all, "
        "--throughput -1) into a fresh 6-partition topic on the same single local broker the "
        "gateway and the baseline use, and on a PLAINTEXT broker beside it (runs alternate)",
    }


def write(result: dict[str, Any], out: Path = RESULTS) -> None:
    rows = [(f"{result.get('security', 'plaintext')} (the stack's setting)", result)]
    if "plaintext" in result:
        rows.append(("PLAINTEXT, same run", result["plaintext"]))
    table = "".join(
        f"| {label} | {r['records']:,} | {result['record_size']} | {r['records_per_s']:,.0f} | "
        f"{r['mb_per_s']} | {r['avg_ms']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |\n"
        for label, r in rows
    )
    ratio = result.get("secured_vs_plaintext")
    cost = f"\nSASL_SSL against PLAINTEXT: {ratio}x the records/s.\n" if ratio else ""
    save(
        out,
        "kafka",
        result,
        f"# Kafka's ceiling\n\nMachine: {describe(result['machine'])}. {result['n_runs']} run(s), "
        "median.\n\n| broker | records | size B | records/s | MB/s | avg ms | p50 ms | p95 ms | "
        "p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"{table}{cost}\n{result['note']}.\n",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--record-size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = run(records=args.records, size=args.record_size, runs=args.runs)
    write(result)
    console.print((RESULTS / "kafka.md").read_text())


if __name__ == "__main__":
    main()
