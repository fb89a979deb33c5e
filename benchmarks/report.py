"""The summary of a benchmark run: ``summary.json``, ``README.md`` (one table of every headline
figure with its ratios) and the PNG plots, all in benchmarks/results/.

Input is what each part's ``run()`` returned, by part name (any subset of :data:`PARTS`).
Every figure carries the machine description in its footer.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from benchmarks.common import describe

PARTS = ("gateway", "baseline", "kafka", "processor", "sinks", "ops", "e2e")
PLOTS = {
    "gateway_throughput.png": "gateway events/s by clients, per batch size, with the baseline",
    "gateway_p99.png": "gateway p99 ack latency by clients, per batch size",
    "processor.png": "stream processor: worker vs plain loop",
    "e2e_latency.png": "end-to-end latency CDF, 202 to row stored in ClickHouse",
}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b to four significant digits; None when either is missing (or b is 0)."""
    return float(f"{a / b:.4g}") if a is not None and b else None


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def _cells(result: dict[str, Any] | None) -> dict[tuple[int, int], dict[str, Any]]:
    if not result:
        return {}
    return {(int(r["batch"]), int(r["clients"])): r for r in result["scenarios"]}


def gateway_vs_baseline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (batch, clients) cell of the gateway: its figures, the baseline's and the ratios."""
    gateway, baseline = _cells(results.get("gateway")), _cells(results.get("baseline"))
    rows = []
    for key in sorted(gateway):
        g, b = gateway[key], baseline.get(key)
        rows.append(
            {
                "batch": key[0],
                "clients": key[1],
                "gateway_events_per_s": g["events_per_s"],
                "baseline_events_per_s": b["events_per_s"] if b else None,
                "ratio_events_per_s": ratio(g["events_per_s"], b["events_per_s"] if b else None),
                "gateway_p99_ms": g["p99_ms"],
                "baseline_p99_ms": b["p99_ms"] if b else None,
                "gateway_success_rate": g["success_rate"],
                "baseline_success_rate": b["success_rate"] if b else None,
            }
        )
    return rows


class Headline:
    """The headline rows, in the order they are added."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        part: str,
        measure: str,
        value: float,
        unit: str,
        versus: str = "",
        against: float | None = None,
    ) -> None:
        self.rows.append(
            {
                "part": part,
                "measure": measure,
                "value": value,
                "unit": unit,
                "versus": versus,
                "ratio": ratio(value, against) if versus else None,
            }
        )


def _gateway(h: Headline, gateway: dict[str, Any], baseline: Any, kafka: Any) -> None:
    cells = _cells(gateway)
    best = max(cells.values(), key=lambda r: r["events_per_s"])
    base = _cells(baseline).get((best["batch"], best["clients"]))
    h.add(
        "gateway",
        f"peak events/s (batch {best['batch']}, {best['clients']} clients)",
        best["events_per_s"],
        "events/s",
        "baseline, same cell" if base else "",
        base["events_per_s"] if base else None,
    )
    single = cells.get((1, 1))
    if single:
        base1 = _cells(baseline).get((1, 1))
        h.add(
            "gateway",
            "1 event per request, 1 client",
            single["events_per_s"],
            "events/s",
            "baseline, same cell" if base1 else "",
            base1["events_per_s"] if base1 else None,
        )
        h.add(
            "gateway",
            "p99 ack latency, 1 event, 1 client",
            single["p99_ms"],
            "ms",
            "baseline, same cell" if base1 else "",
            base1["p99_ms"] if base1 else None,
        )
    if kafka:
        h.add(
            "gateway",
            "peak events/s against Kafka's own ceiling",
            best["events_per_s"],
            "events/s",
            "Kafka ProducerPerformance",
            kafka["records_per_s"],
        )
    sec = gateway.get("security")
    if sec:
        _security(h, sec)


def _security(h: Headline, sec: dict[str, Any]) -> None:
    h.add(
        "security",
        "JWT verify, cache hit",
        sec["jwt_verify_cached_us"],
        "µs",
        "JWT verify without cache",
        sec["jwt_verify_uncached_us"],
    )
    h.add("security", "JWT verify, no cache", sec["jwt_verify_uncached_us"], "µs")
    h.add(
        "security",
        "authorization decision, cache hit",
        sec["authz_decision_cached_us"],
        "µs",
        "evaluated afresh",
        sec["authz_decision_uncached_us"],
    )
    h.add(
        "security",
        "authorization decision, evaluated",
        sec["authz_decision_uncached_us"],
        "µs",
    )
    h.add("security", "receipt signing (Ed25519 + HMAC seal)", sec["receipt_sign_us"], "µs")
    if "receipt_tree_100_us" in sec:
        h.add(
            "security",
            "receipt per event, one signed tree of 100 (format 2)",
            sec["receipt_tree_100_us"],
            "µs",
            "one signature per event (format 1)",
            sec["receipt_sign_us"],
        )


def _baseline(h: Headline, baseline: dict[str, Any]) -> None:
    best = max(_cells(baseline).values(), key=lambda r: r["events_per_s"])
    h.add(
        "baseline",
        f"peak events/s (batch {best['batch']}, {best['clients']} clients)",
        best["events_per_s"],
        "events/s",
    )


def _kafka(h: Headline, kafka: dict[str, Any]) -> None:
    h.add(
        "kafka",
        f"ProducerPerformance, {kafka['record_size']} B records, acks=all",
        kafka["records_per_s"],
        "records/s",
        *_plaintext(kafka, "records_per_s"),
    )
    h.add(
        "kafka", "ProducerPerformance p99 latency", kafka["p99_ms"], "ms",
        *_plaintext(kafka, "p99_ms"),
    )  # fmt: skip


def _plaintext(kafka: dict[str, Any], key: str) -> tuple[str, float | None] | tuple[()]:
    """The same figure on the PLAINTEXT broker of the same run, when the part measured one."""
    plain = kafka.get("plaintext")
    return ("the same broker in PLAINTEXT, same run", plain[key]) if plain else ()


def _processor(h: Headline, processor: dict[str, Any]) -> None:
    h.add(
        "processor",
        "sealstream worker (faust, exactly-once)",
        processor["worker_events_per_s"],
        "events/s",
        "plain confluent-kafka loop",
        processor["plain_loop_events_per_s"],
    )
    h.add(
        "processor",
        "plain confluent-kafka loop (at-least-once)",
        processor["plain_loop_events_per_s"],
        "events/s",
    )
    if "transactional_loop_events_per_s" in processor:
        h.add(
            "processor",
            "sealstream worker (faust, exactly-once)",
            processor["worker_events_per_s"],
            "events/s",
            "plain transactional loop (exactly-once)",
            processor["transactional_loop_events_per_s"],
        )
    if "framed_worker_events_per_s" in processor:
        frame = processor.get("frame", "n")
        h.add(
            "processor",
            f"sealstream worker on frames of {frame} events",
            processor["framed_worker_events_per_s"],
            "events/s",
            "plain transactional loop, same frames",
            processor["framed_transactional_loop_events_per_s"],
        )
        h.add(
            "processor",
            f"sealstream worker on frames of {frame} events",
            processor["framed_worker_events_per_s"],
            "events/s",
            "the worker on one event per record",
            processor["worker_events_per_s"],
        )


def _sinks(h: Headline, sinks: dict[str, Any]) -> None:
    h.add(
        "sinks",
        "ClickHouse sink (embedded chDB)",
        sinks["clickhouse_sink_rows_per_s"],
        "rows/s",
    )
    h.add(
        "sinks",
        "object sink (local directory)",
        sinks["object_sink_records_per_s"],
        "records/s",
    )
    for r in sinks.get("lookups", []):
        if r["state"] == "merged":
            h.add("sinks", f"find_event p99 at {r['rows']:,} rows (merged)", r["p99_ms"], "ms")


def _ops(h: Headline, ops: dict[str, Any]) -> None:
    audit = ops["audit"]
    h.add(
        "ops",
        f"audit trail p50 at {audit['rows']:,} events (index)",
        audit["p50_ms"],
        "ms",
        "from ClickHouse (5 queries)",
        audit["from_store"]["p50_ms"],
    )
    h.add("ops", f"audit trail p99 at {audit['rows']:,} events (index)", audit["p99_ms"], "ms")
    h.add("ops", "verify", ops["verify"]["entries_per_s"], "entries/s")


def _e2e(h: Headline, e2e: dict[str, Any]) -> None:
    h.add(
        "e2e",
        "sustained, 202 to rows visible in ClickHouse",
        e2e["events_per_s"],
        "events/s",
        "accepted by the gateway meanwhile",
        e2e["accept_events_per_s"],
    )
    h.add("e2e", "steady state (middle half of the rows)", e2e["steady_events_per_s"], "events/s")
    h.add(
        "e2e",
        f"latency p50 at {e2e['latency_rate_events_per_s']:,.0f} events/s (open loop)",
        e2e["latency_p50_ms"],
        "ms",
    )
    h.add("e2e", "latency p99 (open loop)", e2e["latency_p99_ms"], "ms")
    other = e2e.get("compared")
    if other:
        settings = ", ".join(f"{k}={v}" for k, v in other["env"].items())
        h.add(
            "e2e",
            "sustained, 202 to rows visible in ClickHouse",
            e2e["events_per_s"],
            "events/s",
            f"the same with {settings}",
            other["events_per_s"],
        )


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures: (part, measure, value, unit, compared with, ratio)."""
    h = Headline()
    gateway, baseline, kafka = (results.get(k) for k in ("gateway", "baseline", "kafka"))
    if gateway:
        _gateway(h, gateway, baseline, kafka)
    if baseline and not gateway:
        _baseline(h, baseline)
    if kafka:
        _kafka(h, kafka)
    parts = {"processor": _processor, "sinks": _sinks, "ops": _ops, "e2e": _e2e}
    for name, rows in parts.items():
        result = results.get(name)
        if result:
            rows(h, result)
    return h.rows


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:,.0f}"


def summary(
    results: dict[str, Any], machine: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "options": options,
        "parts": [p for p in PARTS if p in results],
        "headline": headline(results),
        "gateway_vs_baseline": gateway_vs_baseline(results),
    }


def readme(doc: dict[str, Any]) -> str:
    """benchmarks/results/README.md: the headline table, the gateway/baseline matrix, links."""
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {describe(doc['machine'])}. Generated {doc['generated_at']} by "
        f"`python -m benchmarks {doc['options'].get('argv', '')}`".rstrip()
        + "; "
        f"every figure is the median of {doc['options'].get('runs', 1)} run(s) "
        "(per-run values in each part's JSON).",
        *(
            [
                "",
                "Parts not run this time, their figures from an earlier run: "
                + ", ".join(doc["options"]["kept_from_earlier_runs"])
                + ".",
            ]
            if doc["options"].get("kept_from_earlier_runs")
            else []
        ),
        "",
        "| part | measure | figure | compared with | ratio |",
        "|---|---|---:|---|---:|",
    ]
    for r in doc["headline"]:
        lines.append(
            f"| {r['part']} | {r['measure']} | {number(r['value'])} {r['unit']} | "
            f"{r['versus']} | {fmt_ratio(r['ratio']) if r['versus'] else ''} |"
        )
    matrix = doc["gateway_vs_baseline"]
    if matrix:
        lines += [
            "",
            "## Gateway vs naive baseline, per cell",
            "",
            "Same broker, same machine, same load generator; ratio = gateway / baseline.",
            "",
            "The two do different amounts of work per event. The baseline writes one Kafka "
            "record per event and flushes once per request. The gateway writes the events in "
            "frames (one record per partition and request), the request's allow decisions as "
            "one record on `audit.decisions` (each denial its own), a receipt per event on "
            "`receipts` under one signed Merkle tree head per request (docs/gateway.md), "
            "checks idempotency against the receipts it follows, and enforces "
            "tenant policy and rate limits. Per request it is about even or ahead (batch 1); "
            "per event in large batches those per-event costs decide. "
            "Profiles: [profiles/README.md](profiles/README.md).",
            "",
            "| batch | clients | gateway events/s | baseline events/s | ratio | gateway p99 ms | "
            "baseline p99 ms | gateway ok | baseline ok |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in matrix:
            b_rate, b_p99, b_ok = (
                r["baseline_events_per_s"],
                r["baseline_p99_ms"],
                r["baseline_success_rate"],
            )
            lines.append(
                f"| {r['batch']} | {r['clients']} | {number(r['gateway_events_per_s'])} | "
                f"{'-' if b_rate is None else number(b_rate)} | "
                f"{fmt_ratio(r['ratio_events_per_s'])} | {r['gateway_p99_ms']} | "
                f"{'-' if b_p99 is None else b_p99} | {r['gateway_success_rate']:.1%} | "
                f"{'-' if b_ok is None else f'{b_ok:.1%}'} |"
            )
    lines += ["", "## Parts", ""]
    lines += [f"- [{p}]({p}.md) ([json]({p}.json))" for p in doc["parts"]]
    pngs = doc.get("plots", [])
    if pngs:
        lines += ["", "## Plots", ""]
        lines += [f"![{PLOTS.get(name, name)}]({name})" for name in pngs]
    return "\n".join(lines) + "\n"


# -- plots ------------------------------------------------------------------------------------


def _figure(title: str, machine: dict[str, Any]) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    ax.set_title(title)
    fig.text(0.01, 0.01, f"Machine: {describe(machine)}", fontsize=7, color="#555555")
    fig.subplots_adjust(bottom=0.17)
    return fig, ax


def _log_axes(ax: Any, xticks: list[int] | None = None) -> None:
    """Log scales with plain numbers on the ticks (1, 25, 250 rather than 10^1)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
    if xticks:
        ax.set_xticks(xticks)
    ax.grid(True, which="both", alpha=0.3)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
    return path


def _series(result: dict[str, Any], field: str) -> dict[int, tuple[list[int], list[float]]]:
    by_batch: dict[int, tuple[list[int], list[float]]] = {}
    for (batch, clients), r in sorted(_cells(result).items()):
        xs, ys = by_batch.setdefault(batch, ([], []))
        xs.append(clients)
        ys.append(r[field])
    return by_batch


def plot_gateway(results: dict[str, Any], out: Path) -> list[Path]:
    """events/s and p99 ack latency by concurrent clients, one line per batch size, the naive
    baseline dashed beside the gateway."""
    gateway, baseline = results["gateway"], results.get("baseline")
    charts = (
        ("events_per_s", "Gateway: events/s by concurrent clients (acks=all)", "events/s",
         "gateway_throughput.png"),
        ("p99_ms", "Gateway: p99 ack latency by concurrent clients", "p99 latency (ms)",
         "gateway_p99.png"),
    )  # fmt: skip
    paths = []
    for field, title, ylabel, name in charts:
        fig, ax = _figure(title, gateway["machine"])
        for what, style in (
            (gateway, {"marker": "o"}),
            (baseline, {"marker": "x", "linestyle": "--"}),
        ):
            if not what:
                continue
            label = "gateway" if what is gateway else "naive baseline"
            for i, (batch, (xs, ys)) in enumerate(_series(what, field).items()):
                ax.plot(xs, ys, color=f"C{i}", label=f"{label}, batch {batch}", **style)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axes(ax, sorted({c for _, c in _cells(gateway)}))
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / name))
    return paths


def plot_processor(result: dict[str, Any], out: Path) -> Path:
    fig, ax = _figure(
        "Stream processor events/s, same Processor and broker (worker / plain: "
        f"{fmt_ratio(result['ratio_worker_to_plain'])})",
        result["machine"],
    )
    names = ["worker\n(faust,\nexactly-once)", "plain loop\n(at-least-\nonce)"]
    values = [result["worker_events_per_s"], result["plain_loop_events_per_s"]]
    if "transactional_loop_events_per_s" in result:
        names.append("transactional\nloop\n(exactly-once)")
        values.append(result["transactional_loop_events_per_s"])
    colors = ["C0", "C7", "C8"][: len(values)]
    if "framed_worker_events_per_s" in result:
        frame = result.get("frame", "n")
        names += [f"worker,\nframes\nof {frame}", f"transactional\nloop, frames\nof {frame}"]
        values += [
            result["framed_worker_events_per_s"],
            result["framed_transactional_loop_events_per_s"],
        ]
        colors += ["C1", "C9"]
    bars = ax.bar(names, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values])
    ax.set_ylabel("events/s")
    ax.margins(y=0.12)
    return _save(fig, out / "processor.png")


def plot_e2e(result: dict[str, Any], out: Path) -> Path:
    fig, ax = _figure(
        f"End to end: 202 to row stored in ClickHouse, open loop at "
        f"{result['latency_rate_events_per_s']:,.0f} events/s",
        result["machine"],
    )
    quantiles = [q * 100 for q in result["cdf_quantiles"]]
    for i, run in enumerate(result["runs"]):
        ax.plot(run["latency_cdf_ms"], quantiles, label=f"run {i + 1}", color=f"C{i}")
    ax.axhline(50, color="#999999", linewidth=0.6)
    ax.axhline(99, color="#999999", linewidth=0.6)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("percent of events")
    ax.set_xscale("log")
    _log_axes(ax)
    ax.legend(fontsize=8)
    return _save(fig, out / "e2e_latency.png")


def write_report(
    results: dict[str, Any], out: Path, machine: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """summary.json, README.md and the PNGs into ``out``; the summary."""
    out.mkdir(parents=True, exist_ok=True)
    doc = summary(results, machine, options)
    plots: list[Path] = []
    if "gateway" in results:
        plots += plot_gateway(results, out)
    if "processor" in results:
        plots.append(plot_processor(results["processor"], out))
    if "e2e" in results:
        plots.append(plot_e2e(results["e2e"], out))
    doc["plots"] = [p.name for p in plots]
    (out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "README.md").write_text(readme(doc))
    return doc
