"""The main job: ``sealstream up --demo`` (README's `make run`) on the embedded defaults, in its
own stack directory and ports. While it runs: the dashboard in headless Chromium shows numbers
moving while events flow (screenshot saved), a worker and a sink are SIGKILLed and restarted
by the supervisor and a second demo still reconciles, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"


def _wait_for(predicate: Any, timeout_s: float, what: str, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"`up` exited {proc.returncode} while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


def _tile(driver: Any, element_id: str) -> float | None:
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.ID, element_id).text.strip()
    return float(text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else None


def test_up_runs_the_demo_survives_kills_serves_the_dashboard_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    ports = free_ports(8)
    names = [
        "SEALSTREAM_STACK_KAFKA_PORT", "SEALSTREAM_STACK_CONTROLLER_PORT",
        "SEALSTREAM_STACK_REGISTRY_PORT", "SEALSTREAM_GATEWAY_PORT",
        "SEALSTREAM_CLICKHOUSE_QUERY_PORT", "SEALSTREAM_UP_DASHBOARD_PORT",
        "SEALSTREAM_UP_WORKER_METRICS_PORT", "SEALSTREAM_UP_OBJECTS_METRICS_PORT",
    ]  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SEALSTREAM_")},
        **{name: str(port) for name, port in zip(names, ports, strict=True)},
    }
    stack_dir = tmp_path / "stack"
    log = (tmp_path / "up.log").open("wb")
    started = time.monotonic()
    up = subprocess.Popen(
        [sys.executable, "-m", "sealstream.cli", "up", "--dir", str(stack_dir), "--demo",
         "--per-tenant", "40"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = tmp_path / "up.log"
    try:
        summary_file = stack_dir / "demo-summary.json"
        _wait_for(summary_file.exists, 300, "the demo summary", up)
        summary = json.loads(summary_file.read_text())
        took = time.monotonic() - started
        print(f"up --demo reached its summary in {took:.0f} s: {summary}")
        assert summary["ok"], (summary, output.read_text()[-5000:])
        assert summary["accepted"] == 3 * 40
        assert summary["stored_hot"] == summary["stored_cold"] == summary["accepted"]
        assert summary["rejected"] == {
            "schema_mismatch": 6, "unknown_event_type": 3,
            "deny_event_type_not_allowed_for_tenant": 1, "deny_tenant_mismatch": 1,
        }  # fmt: skip
        assert summary["verify_ok"] is True and summary["dead_lettered"] == 0
        text = output.read_text()
        assert "demo OK" in text and "/dashboard" in text
        for name in ("gateway", "worker-1", "sink-clickhouse", "sink-objects"):
            assert (stack_dir / "logs" / f"{name}.log").stat().st_size > 0

        # the dashboard, in headless Chromium, while more events flow
        dashboard = f"http://127.0.0.1:{env['SEALSTREAM_UP_DASHBOARD_PORT']}/dashboard"
        assert httpx.get(dashboard + "/static/uPlot.iife.min.js").status_code == 200
        driver = _browser()
        try:
            driver.get(dashboard)
            before = _wait_for(lambda: _tile(driver, "accepted"), 30, "the dashboard's numbers")
            rows_before = _wait_for(lambda: _tile(driver, "rows"), 30, "rows on the dashboard")
            assert before >= summary["accepted"] and rows_before >= summary["accepted"]
            demo = subprocess.Popen(
                [sys.executable, "-m", "sealstream.cli", "demo", "--dir", str(stack_dir),
                 "--per-tenant", "40", "--json"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            moved = _wait_for(
                lambda: (
                    (_tile(driver, "accepted") or 0) > before
                    and (_tile(driver, "ingest-rate") or 0) > 0
                ),
                60,
                "the ingest numbers to move",
            )
            assert moved
            out, _ = demo.communicate(timeout=300)
            assert demo.returncode == 0, out[-3000:]
            _wait_for(lambda: (_tile(driver, "rows") or 0) >= rows_before + 120, 60, "rows to move")
            _wait_for(
                lambda: driver.find_element("id", "verify").text == "clean", 30, "verify tile"
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        finally:
            driver.quit()

        # a worker and a sink SIGKILLed: restarted, and the totals still reconcile
        state = json.loads((stack_dir / "up.json").read_text())
        pids = {s["name"]: s["pid"] for s in state["services"]}
        for name in ("worker-1", "sink-clickhouse"):
            os.kill(pids[name], signal.SIGKILL)

        def restarted() -> bool:
            now = {
                s["name"]: s for s in json.loads((stack_dir / "up.json").read_text())["services"]
            }
            return all(
                now[n]["restarts"] >= 1 and now[n]["running"] and now[n]["pid"] != pids[n]
                for n in ("worker-1", "sink-clickhouse")
            )

        _wait_for(restarted, 60, "the killed processes to be restarted", up)
        again = subprocess.run(
            [sys.executable, "-m", "sealstream.cli", "demo", "--dir", str(stack_dir),
             "--per-tenant", "30", "--json"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert again.returncode == 0, (again.stdout[-3000:], again.stderr[-3000:])
        after_kill = json.loads(again.stdout.strip().splitlines()[-1])
        assert after_kill["stored_hot"] == after_kill["stored_cold"] == after_kill["accepted"] == 90
    finally:
        # Ctrl-C: everything stops, in order, and the stack with it
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(120)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
        finally:
            log.close()
    tail = output.read_text()[-3000:]
    assert code == 0, tail
    assert "stack stopped" in tail and not (stack_dir / "up.json").exists()
    stopped = re.search(r"stopped: (\{.*?\})", tail, re.S)
    assert stopped and set(re.findall(r": (-?\d+|None)", stopped.group(1))) <= {"0"}, tail
