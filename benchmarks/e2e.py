"""End-to-end benchmark: from the HTTP 202 to the row in ClickHouse, through the whole pipeline
as ``sealstream up`` runs it (Kafka, registry, gateway, one worker, both sinks, embedded chDB).

    python -m benchmarks.e2e [--seconds 20] [--runs 3] [--compare KEY=VALUE ...]

``--compare`` runs the whole benchmark a second time with those settings (for example
``SEALSTREAM_GATEWAY_FRAME_MAX_EVENTS=1``: no frames) and reports both, with their ratio.

(a) Sustained: as many events as the gateway takes (``clients`` connections posting batches)
for ``seconds``, then wait until ClickHouse holds every accepted one. Reported: accepted
events / (time from the first send until the last row was seen by polling), and the steady
rate: half the rows / the time between the 25th and 75th percentile of their ``stored_at``
(ramp-up and drain left out).

(b) Latency: an open-loop constant rate at 50% of (a)'s rate for ``seconds`` (requests leave
on a fixed schedule whatever the answers, so a slow pipeline cannot slow the load down). Per
event: ClickHouse ``events.stored_at`` (``DEFAULT now64(3)``: the server's clock when the
sink's INSERT ran) minus the event's scheduled send time, both on this machine's clock.

Writes benchmarks/results/e2e.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    E2E_HTTP_PORT,
    E2E_KAFKA_PORT,
    RESULTS,
    console,
    describe,
    machine,
    median_of,
    save,
    task,
)
from ops.upjob import UpJob

WORK = RESULTS / "tmp" / "e2e"
# per ops.upjob.PORTS: Kafka, controller, registry, gateway, query endpoint, dashboard,
# the first worker's metrics (worker n takes + n - 1: room for SEALSTREAM_UP_WORKERS up to 16),
# object sink metrics
PORTS = (
    E2E_KAFKA_PORT,
    E2E_KAFKA_PORT + 1,
    *(E2E_HTTP_PORT + i for i in range(4)),
    E2E_HTTP_PORT + 10,
    E2E_HTTP_PORT + 4,
)
# what `sealstream up` runs with, except the gateway's rate limits (the load would measure
# the limiter) and the test harness's shorter sink batch ages (UpJob's defaults)
ENV = {
    "SEALSTREAM_GATEWAY_TENANT_RATE_PER_S": "1000000",
    "SEALSTREAM_GATEWAY_TENANT_BURST": "1000000",
    "SEALSTREAM_GATEWAY_CLIENT_RATE_PER_S": "1000000",
    "SEALSTREAM_GATEWAY_CLIENT_BURST": "1000000",
    "SEALSTREAM_SINK_CLICKHOUSE_MAX_AGE_S": "1.0",
    "SEALSTREAM_SINK_OBJECTS_MAX_AGE_S": "5",
    "SEALSTREAM_SINK_BACKOFF_MAX_S": "15",
}
QUANTILES = [q / 200 for q in range(201)]  # the latency CDF kept in the JSON, 0.5% steps


def event(i: int, source: str, event_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_type": "page_view",
        "tenant": "acme",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "payload": {"session_id": f"s-{i % 1000}", "url": f"/p/{i}", "user_id": f"u-{i % 97}"},
    }
    if event_id is not None:
        body["event_id"] = event_id
    return body


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stored(job: UpJob, source: str) -> int:
    rows = job.query(f"SELECT count() FROM events WHERE source = {_quote(source)}")
    return int(rows[0][0])


def wait_stored(job: UpJob, source: str, wanted: int, timeout_s: float, label: str) -> float:
    """Poll ClickHouse until ``wanted`` rows of ``source`` are visible; the wall-clock time
    they were (the poll that saw them: at most one poll interval late)."""
    deadline = time.monotonic() + timeout_s
    with task(label, total=wanted) as bar:
        while True:
            seen = stored(job, source)
            bar.update(completed=seen)
            if seen >= wanted:
                return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {wanted} events in ClickHouse after {timeout_s} s")
            time.sleep(0.5)


async def push(url: str, token: str, source: str, clients: int, batch: int, seconds: float) -> int:
    """Closed loop, as fast as the gateway answers; the number of events accepted."""
    import aiohttp

    body = json.dumps({"events": [event(i, source) for i in range(batch)]})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    accepted = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients)) as s:

        async def worker() -> None:
            nonlocal accepted
            while time.monotonic() < deadline:
                async with s.post("/v1/events", data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 202:
                        accepted += batch

        await asyncio.gather(*(worker() for _ in range(clients)))
    return accepted


def sustained(job: UpJob, token: str, seconds: float, clients: int, batch: int) -> dict[str, Any]:
    source = f"bench-e2e-a-{uuid.uuid4().hex[:8]}"
    started = time.time()
    with task(f"e2e: pushing for {seconds:.0f} s ({clients} clients x {batch} events)"):
        accepted = asyncio.run(push(job.gateway_url, token, source, clients, batch, seconds))
    pushed = time.time()
    visible = wait_stored(job, source, accepted, max(180.0, 20 * seconds), "e2e: landing")
    q25, q75 = job.query(
        "SELECT quantileExact(0.25)(toUnixTimestamp64Milli(stored_at)), "
        "quantileExact(0.75)(toUnixTimestamp64Milli(stored_at)) "
        f"FROM events WHERE source = {_quote(source)}"
    )[0]
    middle_s = max(0.001, (int(q75) - int(q25)) / 1000)
    return {
        "accepted": accepted,
        "accept_events_per_s": round(accepted / (pushed - started), 1),
        "events_per_s": round(accepted / (visible - started), 1),
        "steady_events_per_s": round(accepted / 2 / middle_s, 1),
        "seconds_to_last_row": round(visible - started, 2),
    }


async def open_loop(
    url: str, token: str, source: str, rate: float, seconds: float
) -> dict[str, float]:
    """Requests on a fixed schedule (batches of ``per`` events at ``rate`` events/s); the
    scheduled send time (epoch seconds) of every accepted event, by event_id."""
    import aiohttp

    per = max(1, round(rate / 100))  # about 100 requests/s at most
    interval = per / rate
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent: dict[str, float] = {}
    start_wall, start = time.time() + 0.2, time.monotonic() + 0.2
    count = int(seconds / interval)

    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=1000)) as s:

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
            ids = [str(uuid.uuid4()) for _ in range(per)]
            body = {"events": [event(i * per + n, source, ids[n]) for n in range(per)]}
            async with s.post("/v1/events", json=body, headers=headers) as response:
                await response.read()
                if response.status == 202:
                    for event_id in ids:
                        sent[event_id] = start_wall + i * interval

        await asyncio.gather(*(one(i) for i in range(count)))
    return sent


def latency(job: UpJob, token: str, rate: float, seconds: float) -> dict[str, Any]:
    source = f"bench-e2e-b-{uuid.uuid4().hex[:8]}"
    with task(f"e2e: open loop at {rate:,.0f} events/s for {seconds:.0f} s"):
        sent = asyncio.run(open_loop(job.gateway_url, token, source, rate, seconds))
    wait_stored(job, source, len(sent), max(180.0, 20 * seconds), "e2e: landing")
    rows = job.query(
        "SELECT event_id, toUnixTimestamp64Milli(received_at), "
        "toUnixTimestamp64Milli(signed_at), toUnixTimestamp64Milli(stored_at) FROM events "
        f"WHERE source = {_quote(source)}"
    )
    # per event, ms: scheduled send -> gateway -> worker -> sink (each stage's own clock
    # stamp; all on this machine)
    timed = sorted(
        (sent[str(event_id)] * 1000, int(received), int(signed), int(stored))
        for event_id, received, signed, stored in rows
    )
    lat = sorted(stored - at for at, _, _, stored in timed)
    cdf = [round(lat[min(len(lat) - 1, int(q * (len(lat) - 1)))], 1) for q in QUANTILES]
    third = max(1, len(timed) // 3)
    return {
        "rate_events_per_s": round(rate, 1),
        "scheduled": int(seconds * rate),
        "events": len(lat),
        "p50_ms": round(statistics.median(lat), 1),
        "p99_ms": round(_p99(lat), 1),
        "max_ms": round(lat[-1], 1),
        "cdf_ms": cdf,
        # where the time went: a stage whose share grows with the rate is the one that queues
        "stages_ms": {
            name: {"p50": round(statistics.median(d), 1), "p99": round(_p99(sorted(d)), 1)}
            for name, d in (
                ("gateway", [received - at for at, received, _, _ in timed]),
                ("worker", [signed - received for _, received, signed, _ in timed]),
                ("sink", [stored - signed for _, _, signed, stored in timed]),
            )
        },
        # the p50 of the first and the last third by send time: a growing backlog shows
        "first_third_p50_ms": round(statistics.median(s - a for a, *_, s in timed[:third]), 1),
        "last_third_p50_ms": round(statistics.median(s - a for a, *_, s in timed[-third:]), 1),
    }


def _p99(ordered: list[float]) -> float:
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def peak_rss_mib(job: UpJob) -> dict[str, float]:
    """Each process's peak resident set (``VmHWM`` in /proc/<pid>/status: the kernel's own
    high-water mark, no sampling) in MiB: the supervised services of ``up`` and the stack's
    broker and registry."""
    pids: dict[str, int] = {
        name: int(service["pid"]) for name, service in job.services().items() if service.get("pid")
    }
    for pid_file in sorted((job.dir / "run").glob("*.pid")):
        try:
            pids[pid_file.stem] = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
    peaks: dict[str, float] = {}
    for name, pid in sorted(pids.items()):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[name] = round(int(line.split()[1]) / 1024, 1)
    return peaks


def run(
    *,
    seconds: float = 20.0,
    runs: int = 3,
    clients: int = 25,
    batch: int = 100,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start ``sealstream up`` (its own stack and ports; ``env`` added to its settings), (a)
    then (b) ``runs`` times."""
    import shutil

    shutil.rmtree(WORK, ignore_errors=True)
    job = UpJob(WORK, PORTS, **{**ENV, **(env or {})})
    per_run: list[dict[str, Any]] = []
    peaks: dict[str, float] = {}
    try:
        with task("e2e: sealstream up (stack, gateway, worker, sinks)"):
            job.start()
        token = job.token("acme", ("publisher",), ["events:write"])
        for _ in range(runs):
            a = sustained(job, token, seconds, clients, batch)
            console.log(f"e2e sustained: {a}")
            b = latency(job, token, a["events_per_s"] / 2, seconds)
            console.log(f"e2e latency: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms")
            per_run.append({**a, **{f"latency_{k}": v for k, v in b.items()}})
        peaks = peak_rss_mib(job)  # over every run: the high-water marks of the whole job
    finally:
        job.stop()
    summary = median_of([{k: v for k, v in r.items() if k != "latency_cdf_ms"} for r in per_run])
    summary.pop("runs", None)
    return {
        "benchmark": "e2e",
        "machine": machine(),
        "seconds": seconds,
        "clients": clients,
        "batch": batch,
        "env": env or {},
        "n_runs": runs,
        **summary,
        "cdf_quantiles": QUANTILES,
        "peak_rss_mib": peaks,
        "runs": per_run,
        "note": "one machine runs Kafka, the registry, the gateway, one worker (faust, "
        "exactly-once), both sinks (ClickHouse embedded, objects to a local directory) and the "
        "load generator; the gateway's rate limits are raised so that they do not cap the load",
    }


def write(result: dict[str, Any], out: Path = RESULTS) -> None:
    r = result
    save(
        out,
        "e2e",
        result,
        f"# End-to-end benchmark\n\nMachine: {describe(r['machine'])}. `sealstream up` on the "
        f"embedded defaults; {r['seconds']} s of load per phase, {r['n_runs']} run(s), medians."
        "\n\n| measure | figure |\n|---|---:|\n"
        "| (a) sustained, 202 to rows visible in ClickHouse | "
        f"{r['events_per_s']:,.0f} events/s |\n"
        f"| (a) steady state (middle half of the rows by stored_at) | "
        f"{r['steady_events_per_s']:,.0f} events/s |\n"
        f"| (a) accepted by the gateway meanwhile ({r['clients']} clients x {r['batch']}) | "
        f"{r['accept_events_per_s']:,.0f} events/s |\n"
        f"| (b) open-loop rate (50% of (a)) | {r['latency_rate_events_per_s']:,.0f} events/s |\n"
        f"| (b) end-to-end latency p50 | {r['latency_p50_ms']:,.0f} ms |\n"
        f"| (b) end-to-end latency p99 | {r['latency_p99_ms']:,.0f} ms |\n"
        + _stages(r)
        + _compared(r)
        + "".join(
            f"| peak RSS, {name} | {mib:,.0f} MiB |\n"
            for name, mib in r.get("peak_rss_mib", {}).items()
        )
        + "\n![latency CDF](e2e_latency.png)\n\n"
        '**What "visible in ClickHouse" means here.** Latency is `events.stored_at` minus the '
        "event's scheduled send time. `stored_at` is `DEFAULT now64(3)` in the `events` table "
        "(sinks/clickhouse/migrations.py): the ClickHouse engine's clock when the sink's "
        "INSERT of the batch ran, on the same machine as the load generator, so no clock skew. "
        "It is the server's own timestamp, not a poll: polling for ids would add up to one poll "
        "interval and load the engine the sink writes to. It is early by the duration of the "
        "INSERT itself (the row is readable once the INSERT returns). "
        "`received_at` (the gateway's clock) would leave out the HTTP and Kafka produce time; "
        "the `ingest_lag_ms` of `events_minutely` is `stored_at - received_at`, the same "
        "measure minus the gateway. The sustained rate (a) instead uses the poll that first "
        "saw the last row, because it measures a count, not one event.\n\n"
        f"{r['note']}.\n",
    )


def _stages(r: dict[str, Any]) -> str:
    """The latency's p50 split by stage, medians of the runs (older results have none)."""
    runs = [run["latency_stages_ms"] for run in r.get("runs", []) if "latency_stages_ms" in run]
    if not runs:
        return ""
    split = " / ".join(
        f"{name} {statistics.median(run[name]['p50'] for run in runs):,.0f}" for name in runs[0]
    )
    return f"| (b) latency p50 by stage, ms: {split} | |\n"


COMPARED = ("events_per_s", "steady_events_per_s", "latency_p50_ms", "latency_p99_ms")


def compare(result: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``other`` (the same benchmark with other settings) beside ``result``, as ratios."""
    return {
        "env": other["env"],
        **{key: other[key] for key in COMPARED},
        **{f"ratio_{key}": round(result[key] / max(other[key], 1e-9), 3) for key in COMPARED},
        "peak_rss_mib": other.get("peak_rss_mib", {}),
    }


def _compared(r: dict[str, Any]) -> str:
    other = r.get("compared")
    if not other:
        return ""
    settings = ", ".join(f"`{k}={v}`" for k, v in other["env"].items())
    return (
        f"| with {settings}: (a) sustained | {other['events_per_s']:,.0f} events/s "
        f"(the defaults: {other['ratio_events_per_s']}x that) |\n"
        f"| with {settings}: (b) latency p50 / p99 | {other['latency_p50_ms']:,.0f} / "
        f"{other['latency_p99_ms']:,.0f} ms |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=25)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--compare", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    shape = {"seconds": args.seconds, "runs": args.runs, "clients": args.clients}
    result = run(**shape, batch=args.batch)
    if args.compare:
        env = dict(item.split("=", 1) for item in args.compare)
        result["compared"] = compare(result, run(**shape, batch=args.batch, env=env))
    write(result)
    from benchmarks.report import plot_e2e

    plot_e2e(result, RESULTS)
    console.print((RESULTS / "e2e.md").read_text())


if __name__ == "__main__":
    main()
