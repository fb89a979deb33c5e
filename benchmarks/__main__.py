"""Every benchmark in one command, on the embedded defaults:

    python -m benchmarks [--quick] [--only gateway,baseline,...] [--runs 3]

Parts, in this order: gateway, baseline (the naive seed service), kafka (the broker's own
ceiling), processor, sinks (these five share one local stack), ops, e2e (its own
``sealstream up``). Each writes <part>.json and .md; then summary.json, README.md and the PNG
plots are written beside them (benchmarks/results/, or benchmarks/results/tmp/quick/ for
``--quick``: small sizes and one run each, a smoke test whose figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks import baseline, e2e, gateway, kafka_perf, ops, processor, report, sinks
from benchmarks.common import RESULTS, STACK_PORT, bench_stack, console, describe, live, machine

STACK_PARTS = ("gateway", "baseline", "kafka", "processor", "sinks")

FULL: dict[str, dict[str, Any]] = {
    "gateway": {"seconds": 5.0, "clients": (1, 25, 100, 250), "batches": (1, 10, 100)},
    "baseline": {"seconds": 5.0, "clients": (1, 25, 100, 250), "batches": (1, 10, 100)},
    "kafka": {"records": 200_000, "size": 512},
    "processor": {"events": 20_000},
    "sinks": {"events": 100_000, "sizes": (1_000_000, 10_000_000), "samples": 2000},
    "ops": {"rows": 1_000_000, "samples": 1000, "verify_events": 200_000},
    "e2e": {"seconds": 20.0, "clients": 25, "batch": 100},
}
QUICK: dict[str, dict[str, Any]] = {
    "gateway": {"seconds": 1.0, "clients": (1, 25), "batches": (1, 100)},
    "baseline": {"seconds": 1.0, "clients": (1, 25), "batches": (1, 100)},
    "kafka": {"records": 20_000, "size": 512},
    "processor": {"events": 2_000},
    "sinks": {"events": 5_000, "sizes": (20_000,), "samples": 200},
    "ops": {"rows": 20_000, "samples": 200, "verify_events": 4_000},
    "e2e": {"seconds": 5.0, "clients": 10, "batch": 50},
}
MODULES: dict[str, Any] = {
    "gateway": gateway,
    "baseline": baseline,
    "kafka": kafka_perf,
    "processor": processor,
    "sinks": sinks,
    "ops": ops,
    "e2e": e2e,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run each")
    parser.add_argument("--only", default="", help=f"comma-separated parts of {report.PARTS}")
    parser.add_argument("--runs", type=int, help="runs per figure (median); 3, 1 with --quick")
    parser.add_argument(
        "--audit-events",
        type=int,
        help="events behind the audit-trail latency (ops); 1,000,000 by default",
    )
    parser.add_argument("--out", type=Path, help="results directory")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()] or list(report.PARTS)
    unknown = sorted(set(parts) - set(report.PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(report.PARTS)}")
    args.parts = [p for p in report.PARTS if p in parts]
    args.runs = args.runs or (1 if args.quick else 3)
    args.out = args.out or (RESULTS / "tmp" / "quick" if args.quick else RESULTS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sizes = {k: dict(v) for k, v in (QUICK if args.quick else FULL).items()}
    if args.audit_events:
        sizes["ops"]["rows"] = args.audit_events
    m = machine()
    console.rule(f"benchmarks: {', '.join(args.parts)}; {args.runs} run(s) per figure")
    console.print(f"Machine: {describe(m)}")
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    timings: dict[str, float] = {}
    stack = None
    with live() as progress:
        overall = progress.add_task("benchmarks", total=len(args.parts))
        try:
            for part in args.parts:
                progress.update(overall, description=f"benchmarks: {part}")
                if part in STACK_PARTS and stack is None:
                    stack = bench_stack("bench", STACK_PORT)
                if part not in STACK_PARTS and stack is not None:
                    stack.down()  # the later parts get the machine to themselves
                    stack = None
                started = time.monotonic()
                kwargs = {**sizes[part], "runs": args.runs}
                if part in STACK_PARTS:
                    kwargs["stack"] = stack
                try:
                    results[part] = MODULES[part].run(**kwargs)
                    MODULES[part].write(results[part], args.out)
                except Exception as exc:  # one broken part must not lose the others' figures
                    failed[part] = f"{type(exc).__name__}: {exc}"
                    console.print(f"[red]{part} failed[/]: {failed[part]}")
                    console.print(traceback.format_exc(), markup=False)
                timings[part] = round(time.monotonic() - started, 1)
                console.log(f"{part} done in {timings[part]} s")
                progress.advance(overall)
        finally:
            if stack is not None:
                stack.down()
    # parts not run this time keep their last figures, so the summary covers every part;
    # the README says which ones are older
    kept = [
        part
        for part in report.PARTS
        if part not in results and part not in failed and (args.out / f"{part}.json").exists()
    ]
    for part in kept:
        results[part] = json.loads((args.out / f"{part}.json").read_text())
    options = {
        "kept_from_earlier_runs": kept,
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "runs": args.runs,
        "sizes": sizes,
        "seconds_per_part": timings,
        "failed": failed,
    }
    doc = report.write_report(results, args.out, m, options)
    print_summary(doc)
    console.print(f"results: {args.out}")
    if failed:
        console.print(f"[red]failed parts: {', '.join(failed)}[/]")
    return 1 if failed else 0


def print_summary(doc: dict[str, Any]) -> None:
    table = Table(title=f"benchmark summary ({describe(doc['machine'])})")
    for col, justify in (("part", "left"), ("measure", "left"), ("figure", "right"),
                         ("compared with", "left"), ("ratio", "right")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in doc["headline"]:
        table.add_row(
            r["part"],
            r["measure"],
            f"{report.number(r['value'])} {r['unit']}",
            r["versus"],
            report.fmt_ratio(r["ratio"]) if r["versus"] else "",
        )
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
