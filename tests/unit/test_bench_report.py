"""The benchmark report (benchmarks/report.py) on a synthetic results dict: the ratios in the
table are computed from the inputs, and every plot is written. No benchmark runs here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report

MACHINE = {
    "cpu_count": 2,
    "platform": "Linux-test",
    "python": "3.11.7",
    "processor": "x86_64",
    "memory_gib": 4.0,
}


def cell(batch: int, clients: int, rate: float, p99: float) -> dict[str, Any]:
    return {"batch": batch, "clients": clients, "events_per_s": rate, "p50_ms": p99 / 3,
            "p95_ms": p99 / 2, "p99_ms": p99, "success_rate": 1.0}  # fmt: skip


def results() -> dict[str, Any]:
    return {
        "gateway": {
            "machine": MACHINE,
            "scenarios": [
                cell(1, 1, 300.0, 12.0),
                cell(1, 25, 700.0, 90.0),
                cell(100, 1, 2400.0, 150.0),
                cell(100, 25, 2600.0, 1300.0),
            ],
            "security": {
                "jwt_verify_cached_us": 2.0,
                "jwt_verify_uncached_us": 100.0,
                "authz_decision_cached_us": 1.5,
                "authz_decision_uncached_us": 6.0,
                "receipt_sign_us": 60.0,
                "per_event_cached_us": 63.5,
            },
        },
        "baseline": {
            "machine": MACHINE,
            "scenarios": [
                cell(1, 1, 120.0, 20.0),
                cell(1, 25, 350.0, 200.0),
                cell(100, 1, 1300.0, 300.0),
                cell(100, 25, 800.0, 4000.0),
            ],
        },
        "kafka": {
            "machine": MACHINE,
            "record_size": 512,
            "records_per_s": 52000.0,
            "p99_ms": 400.0,
            "plaintext": {"records_per_s": 65000.0, "p99_ms": 250.0},
        },
        "processor": {
            "machine": MACHINE,
            "worker_events_per_s": 800.0,
            "plain_loop_events_per_s": 4000.0,
            "ratio_worker_to_plain": 0.2,
        },
        "e2e": {
            "machine": MACHINE,
            "events_per_s": 750.0,
            "steady_events_per_s": 800.0,
            "accept_events_per_s": 2100.0,
            "latency_rate_events_per_s": 375.0,
            "latency_p50_ms": 900.0,
            "latency_p99_ms": 2500.0,
            "cdf_quantiles": [0.0, 0.5, 0.99, 1.0],
            "runs": [{"latency_cdf_ms": [300.0, 900.0, 2500.0, 3000.0]}],
        },
    }


def test_table_holds_the_ratios_of_the_inputs_and_every_plot(tmp_path: Path) -> None:
    doc = report.write_report(results(), tmp_path, MACHINE, {"runs": 3, "argv": "--only x"})

    text = (tmp_path / "README.md").read_text()
    # the machine is named at the top
    assert "2 CPUs (x86_64), 4.0 GiB, Linux-test" in text.splitlines()[2]
    # gateway / baseline per cell: 2600 / 800 and 300 / 120
    assert "| 100 | 25 | 2,600 | 800 | 3.25x |" in text
    assert "| 1 | 1 | 300 | 120 | 2.50x |" in text
    # headline ratios: worker / plain loop, peak gateway / Kafka's ceiling, JWT cache
    assert "| processor | sealstream worker (faust, exactly-once) | 800 events/s |" in text
    assert "plain confluent-kafka loop | 0.20x |" in text
    assert "Kafka ProducerPerformance | 0.05x |" in text
    assert "JWT verify without cache | 0.02x |" in text
    # the cost of SASL_SSL: the secured broker against its PLAINTEXT twin of the same run
    assert "| 52,000 records/s | the same broker in PLAINTEXT, same run | 0.80x |" in text
    for part in ("gateway", "baseline", "kafka", "processor", "e2e"):
        assert f"[{part}]({part}.md)" in text

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(doc))
    cells = {(r["batch"], r["clients"]): r for r in summary["gateway_vs_baseline"]}
    assert cells[(100, 1)]["ratio_events_per_s"] == pytest.approx(2400 / 1300, abs=0.005)

    for name in report.PLOTS:
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 5000, name
        assert f"({name})" in text


def test_a_part_left_out_leaves_out_its_ratio_and_its_plots(tmp_path: Path) -> None:
    only = {k: v for k, v in results().items() if k == "gateway"}
    report.write_report(only, tmp_path, MACHINE, {"runs": 1})

    text = (tmp_path / "README.md").read_text()
    assert "| 1 | 1 | 300 | - | - |" in text
    assert "baseline.md" not in text
    assert (tmp_path / "gateway_throughput.png").stat().st_size > 0
    assert not (tmp_path / "processor.png").exists()
    assert not (tmp_path / "e2e_latency.png").exists()
