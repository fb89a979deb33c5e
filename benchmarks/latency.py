"""Where end-to-end latency goes: the open loop of benchmarks/e2e.py at fixed rates, under
settings variants side by side, each event's latency split by stage (gateway: scheduled send
to ``received_at``; worker: to ``signed_at``; sink: to ``stored_at``).

    python -m benchmarks.latency [--rates 250,500] [--seconds 15]
                                 [--variant NAME:KEY=VALUE,KEY=VALUE ...]

Without ``--variant``: the defaults, and the worker's transaction interval and the ClickHouse
sink's batch age shortened twice (the settings that bound the added latency, per their
descriptions). Each variant is its own ``sealstream up``, started fresh, in turn.

Writes benchmarks/results/latency.json and .md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks import e2e
from benchmarks.common import RESULTS, console, describe, machine, save, task
from ops.upjob import UpJob

COMMIT, AGE = "SEALSTREAM_WORKER_COMMIT_INTERVAL_S", "SEALSTREAM_SINK_CLICKHOUSE_MAX_AGE_S"
VARIANTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "commit 0.2 s, sink age 0.3 s": {COMMIT: "0.2", AGE: "0.3"},
    "commit 0.1 s, sink age 0.15 s": {COMMIT: "0.1", AGE: "0.15"},
}


def run(
    *,
    rates: tuple[float, ...] = (250.0, 500.0),
    seconds: float = 15.0,
    variants: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    import shutil

    found: list[dict[str, Any]] = []
    for name, env in (variants or VARIANTS).items():
        shutil.rmtree(e2e.WORK, ignore_errors=True)
        job = UpJob(e2e.WORK, e2e.PORTS, **{**e2e.ENV, **env})
        try:
            with task(f"latency: sealstream up ({name})"):
                job.start()
            token = job.token("acme", ("publisher",), ["events:write"])
            for rate in rates:
                measured = e2e.latency(job, token, rate, seconds)
                measured.pop("cdf_ms")
                console.log(f"latency {name} at {rate:,.0f}/s: {measured['stages_ms']}")
                found.append({"variant": name, "env": env, **measured})
        finally:
            job.stop()
    return {
        "benchmark": "latency",
        "machine": machine(),
        "seconds": seconds,
        "rates": list(rates),
        "results": found,
        "note": "one machine runs Kafka, the registry, the gateway, one worker, both sinks and "
        "the load generator (sealstream up on the embedded defaults, the gateway's rate limits "
        "raised); open loop as in benchmarks/e2e.py (b); one run per cell",
    }


def write(result: dict[str, Any], out: Path = RESULTS) -> None:
    lines = [
        "# Latency by stage",
        "",
        f"Machine: {describe(result['machine'])}. Open loop, {result['seconds']} s per cell.",
        "",
        "| settings | events/s | p50 ms | p99 ms | gateway p50 | worker p50 / p99 | "
        "sink p50 / p99 | p50 first / last third |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        st = r["stages_ms"]
        lines.append(
            f"| {r['variant']} | {r['rate_events_per_s']:,.0f} | {r['p50_ms']:,.0f} | "
            f"{r['p99_ms']:,.0f} | {st['gateway']['p50']:,.0f} | "
            f"{st['worker']['p50']:,.0f} / {st['worker']['p99']:,.0f} | "
            f"{st['sink']['p50']:,.0f} / {st['sink']['p99']:,.0f} | "
            f"{r['first_third_p50_ms']:,.0f} / {r['last_third_p50_ms']:,.0f} |"
        )
    lines += ["", f"{result['note']}.", ""]
    save(out, "latency", result, "\n".join(lines))


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition(":")
    return name, dict(item.split("=", 1) for item in settings.split(",") if item)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="250,500")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    args = parser.parse_args()
    variants = dict(_variant(v) for v in args.variant) or None
    rates = tuple(float(r) for r in args.rates.split(","))
    result = run(rates=rates, seconds=args.seconds, variants=variants)
    write(result)
    console.print((RESULTS / "latency.md").read_text())


if __name__ == "__main__":
    main()
