"""The main job: ``sealstream up --demo`` (README's `make run`) on the embedded defaults, in its
own stack directory and ports. While it runs: the dashboard in headless Chromium shows numbers
moving while events flow (screenshot saved), a worker and a sink are SIGKILLed and restarted
by the supervisor and a second demo still reconciles, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import contextlib
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


GUIDES = REPO / "docs" / "guides"


def guide_script(name: str) -> str:
    """The guide's ``bash`` blocks, in order (``console`` blocks are not run)."""
    text = (GUIDES / name).read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
    assert blocks, f"{name} has no bash block"
    return "\n".join(blocks)


def run_guide(name: str, env: dict[str, str], stack_dir: Path, cwd: Path) -> str:
    """Run a guide as written, after loading the settings `up` wrote (docs/guides/README.md)."""
    script = f"set -a; . {stack_dir / 'up.env'}; set +a\n" + guide_script(name)
    cwd.mkdir(exist_ok=True)
    path = f"{Path(sys.executable).parent}:{env.get('PATH', os.defpath)}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd, env={**env, "PATH": path}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


ALLOWED_LABELS = {"tenant", "event_type", "reason", "stage", "sink", "topic", "status", "outcome"}


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sealstream_* sample of a /metrics page, checked against Prometheus conventions."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        if not family.name.startswith("sealstream_"):
            continue
        assert re.fullmatch(r"sealstream_[a-z0-9_]+", family.name), family.name
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_bytes")), f"{family.name}: no base unit"
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
            labels = set(sample.labels) - {"le"}
            assert labels <= ALLOWED_LABELS, f"{sample.name}: labels {labels - ALLOWED_LABELS}"
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples, f"no sealstream metrics at {url}"
    return samples


def _by_tenant_type(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **match: str
) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for (sample, labels), value in samples.items():
        found = dict(labels)
        if sample == name and all(found.get(k) == v for k, v in match.items()):
            key = (found["tenant"], found["event_type"])
            out[key] = out.get(key, 0.0) + value
    return {k: v for k, v in out.items() if k[0] in ("acme", "globex", "initech")}


@pytest.mark.timeout(900)
def _generated_secrets(keys: Path) -> dict[str, str]:
    """Every secret the stack generated, as text that would show if it leaked."""
    found: dict[str, str] = {}
    for name in ("hmac.json", "jwt-hs256.json"):
        for kid, value in json.loads((keys / name).read_text())["keys"].items():
            found[f"{name}:{kid}"] = value.removeprefix("base64:")
    found["registry operator"] = (keys / "registry-operator.secret").read_text().split(":", 1)[1]
    for path in sorted((keys / "kafka").glob("*.secret")):  # every Kafka principal's password
        found[f"kafka {path.stem}"] = path.read_text().strip()
    assert {"kafka gateway", "kafka worker", "kafka admin", "kafka broker"} <= set(found)
    pem = (keys / "receipt-ed25519.pem").read_text().splitlines()
    found["receipt key"] = "".join(line for line in pem if not line.startswith("-----"))
    assert all(len(v) >= 32 for v in found.values()), found.keys()
    return found


def _no_generated_secret_leaks(stack_dir: Path, up_log: Path, up_pid: int) -> None:
    """No generated secret in up.env, any log, or any process's arguments or environment."""
    secrets = _generated_secrets(stack_dir / "keys")
    pids = [
        up_pid,
        *(s["pid"] for s in json.loads((stack_dir / "up.json").read_text())["services"]),
    ]
    places = {str(p): p.read_bytes() for p in [stack_dir / "up.env", up_log]}
    places |= {str(p): p.read_bytes() for p in (stack_dir / "logs").glob("*.log")}
    for pid in filter(None, pids):
        for what in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                places[f"/proc/{pid}/{what}"] = Path(f"/proc/{pid}/{what}").read_bytes()
    assert len(places) >= 8, sorted(places)
    leaks = [(name, where) for name, secret in secrets.items() for where, text in places.items()
             if secret.encode() in text]  # fmt: skip
    assert leaks == []


def _logs_are_json_lines_with_context(logs: Path) -> None:
    """Under `up` every service logs JSON lines (sealstream/logs.py), faust's, uvicorn's and
    librdkafka's included, and the gateway's lines carry the request they were logged in:
    the demo's cross-tenant publish (an acme token, a globex event) is refused with its
    tenant and ids."""
    services = {"gateway": "gateway", "worker-1": "worker", "sink-clickhouse": "sink-clickhouse",
                "sink-objects": "sink-objects"}  # fmt: skip
    lines: dict[str, list[dict[str, Any]]] = {}
    for name, service in services.items():
        text = (logs / f"{name}.log").read_text(errors="replace")
        lines[name] = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert {line["service"] for line in lines[name]} <= {service, "up"}, name
        assert all({"timestamp", "level", "logger", "message"} <= line.keys()
                   for line in lines[name]), name  # fmt: skip
    denied = [line for line in lines["gateway"] if line["message"].startswith("authz_denied")
              and "reason=DENY_TENANT_MISMATCH" in line["message"]]  # fmt: skip
    assert len(denied) == 1, denied
    assert denied[0]["tenant"] == "acme" and "event_tenant=globex" in denied[0]["message"]
    assert denied[0]["request_id"] and denied[0]["correlation_id"], denied
    roots = {line["logger"].split(".")[0] for line in lines["worker-1"]}
    assert "sealstream" in roots and roots & {"faust", "mode", "aiokafka"}, roots


def test_up_runs_the_demo_survives_kills_serves_the_dashboard_and_stops_cleanly(
    tmp_path: Path, request: pytest.FixtureRequest
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

    def stack_down() -> subprocess.CompletedProcess[str]:  # `up` runs with --keep-stack
        return subprocess.run(
            [sys.executable, "-m", "ops.cli", "stack", "down", "--dir", str(stack_dir)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    request.addfinalizer(stack_down)
    log = (tmp_path / "up.log").open("wb")
    started = time.monotonic()
    up = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", "--dir", str(stack_dir), "--demo",
         "--per-tenant", "40", "--keep-stack"],
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
        _logs_are_json_lines_with_context(stack_dir / "logs")

        # every process serves Prometheus metrics by the conventions, and the same
        # (tenant, event_type) labels count the same events at each stage
        port = {name: env[name] for name in names}
        gateway = _metrics(f"http://127.0.0.1:{port['SEALSTREAM_GATEWAY_PORT']}/metrics")
        worker = _metrics(f"http://127.0.0.1:{port['SEALSTREAM_UP_WORKER_METRICS_PORT']}/metrics")
        hot_sink = _metrics(f"http://127.0.0.1:{port['SEALSTREAM_CLICKHOUSE_QUERY_PORT']}/metrics")
        cold_sink = _metrics(
            f"http://127.0.0.1:{port['SEALSTREAM_UP_OBJECTS_METRICS_PORT']}/metrics"
        )
        accepted = _by_tenant_type(gateway, "sealstream_gateway_events_accepted_total")
        assert sum(accepted.values()) == summary["accepted"] and len(accepted) == 7
        assert _by_tenant_type(worker, "sealstream_worker_events_signed_total") == accepted
        stored = "sealstream_sink_events_stored_total"
        assert _by_tenant_type(hot_sink, stored, sink="clickhouse") == accepted
        assert _by_tenant_type(cold_sink, stored, sink="objects") == accepted
        rejected = _by_tenant_type(gateway, "sealstream_gateway_events_rejected_total")
        assert sum(rejected.values()) == sum(summary["rejected"].values())
        _no_generated_secret_leaks(stack_dir, output, up.pid)

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
                [sys.executable, "-m", "ops.cli", "demo", "--dir", str(stack_dir),
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

        # the operating guides, run as written against the running pipeline
        guides = tmp_path / "guides"
        before_rotation = json.loads(
            subprocess.run(
                [sys.executable, "-m", "ops.cli", "keys", "list", "--json"],
                cwd=REPO, env={**env, "SEALSTREAM_KEYS_DIR": str(stack_dir / "keys")},
                capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        out = run_guide("rotate-keys.md", env, stack_dir, guides)
        rotated = json.loads(
            next(line for line in out.splitlines() if line.startswith('[{"keyring"'))
        )
        for old, new in zip(before_rotation, rotated, strict=True):
            if old["keyring"] in ("signing", "jwt"):  # a new active key, the old one kept
                assert new["active"] != old["active"] and old["active"] in new["key_ids"]
        run_guide("revoke-tokens.md", env, stack_dir, guides)
        run_guide("replay-dead-letters.md", env, stack_dir, guides)
        run_guide("verify-and-audit.md", env, stack_dir, guides)
        trail = json.loads((guides / "trail.json").read_text())
        assert trail["processing"]["signature_valid"] and trail["read_from"] == "clickhouse"
        assert json.loads((guides / "verify-cold.json").read_text())["ok"] is True

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
            [sys.executable, "-m", "ops.cli", "demo", "--dir", str(stack_dir),
             "--per-tenant", "30", "--json"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert again.returncode == 0, (again.stdout[-3000:], again.stderr[-3000:])
        after_kill = json.loads(again.stdout.strip().splitlines()[-1])
        assert after_kill["stored_hot"] == after_kill["stored_cold"] == after_kill["accepted"] == 90
    finally:
        # Ctrl-C: every process stops, in order (the stack stays: --keep-stack)
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
    assert "stopping" in tail and not (stack_dir / "up.json").exists()
    stopped = re.search(r"stopped: (\{.*?\})", tail, re.S)
    assert stopped and set(re.findall(r": (-?\d+|None)", stopped.group(1))) <= {"0"}, tail

    # disaster: the hot store is lost; the backup guide restores it from cold storage
    shutil.rmtree(stack_dir / "clickhouse")
    (stack_dir / "clickhouse-audit-index.sqlite3").unlink()
    run_guide("backup-restore.md", env, stack_dir, tmp_path / "guides")
    count = subprocess.run(
        [sys.executable, "-c",
         "from sealstream.settings import ClickHouseSettings as S\n"
         "from sinks.clickhouse.client import connect\n"
         "print(connect(S()).query(\"SELECT count() FROM sealstream.events FINAL WHERE tenant "
         "IN ('acme', 'globex', 'initech')\").result_rows[0][0])"],
        cwd=REPO, capture_output=True, text=True, check=True,
        env={**env, "SEALSTREAM_CLICKHOUSE_EMBEDDED_DIR": str(stack_dir / "clickhouse")},
    )  # fmt: skip
    from sinks.objects.files import read_records

    cold_ids = {
        str(record["event_id"])
        for path in (stack_dir / "objects").rglob("*.avro")
        for record in read_records(path.read_bytes())
        if record["tenant"] in ("acme", "globex", "initech")
    }
    demos = summary["accepted"] + 120 + 90 + 3 * 5  # up, dashboard, after the kills, the guide
    assert len(cold_ids) >= demos  # (+ the revocation guide's events)
    assert int(count.stdout.strip()) == len(cold_ids)
    down = stack_down()
    assert down.returncode == 0, down.stderr
