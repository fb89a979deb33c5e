"""The dashboard's charts in Chromium, with latencies past 10 s and rates past 10,000/s: each
y axis is as wide as its longest tick label, so no label is cut ("10,000" once showed as
"0,000" in a fixed 50 px axis)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ops.dashboard import create_app
from tests.integration.conftest import free_port
from tests.integration.test_up import _browser

pytestmark = pytest.mark.integration


class Busy:
    """A collector's view of a busy pipeline: what the page reads from /dashboard/data.json."""

    def __init__(self) -> None:
        now = time.time()
        self.samples = [
            {"t": now - 120 + 2 * i, "rate": 12_000 + 150 * i, "p50": 9_000 + 300 * i,
             "p99": 18_000 + 600 * i, "e2e_p50": 11_000 + 400 * i, "e2e_p99": 25_000 + 900 * i}
            for i in range(60)
        ]  # fmt: skip
        latency = {"p50": 27_000, "p95": 40_000, "p99": 53_000}
        self.latest = {
            "t": now,
            "gateway": {"ingest_rate": 20_850, "accepted": 5_000_000, "rejected_total": 12,
                        "ingest_latency_ms": latency, "rejected": {}, "auth_failures": {}},
            "hot": {"up": True, "rows": 5_000_000, "dead_letters_total": 0, "dead_letters": {},
                    "e2e_lag_ms": latency, "last_verify": None},
            "cold": {"up": True, "files": 400},
            "lag": {"worker": 10}, "processes": [],
        }  # fmt: skip


@pytest.fixture
def page() -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(Busy()), host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/dashboard"
    server.should_exit = True
    thread.join(10)


AXES = """
return [rateChart, latencyChart].map((u) => {
  const axis = u.axes[1];
  u.ctx.font = axis.font[0];
  const width = (v) => u.ctx.measureText(String(v)).width / devicePixelRatio;
  const widths = (axis._values || []).map(width);
  return {labels: axis._values, size: axis._size, room: axis._size - axis.ticks.size - axis.gap,
          widest: Math.max(...widths)};
});
"""


def test_axis_labels_are_whole_past_10_s_and_10000_per_s(page: str) -> None:
    driver = _browser()
    try:
        driver.get(page)
        deadline = time.monotonic() + 30
        axes: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            ready = driver.execute_script(
                "return typeof latencyChart !== 'undefined' && !!latencyChart"
            )
            if ready:
                axes = driver.execute_script(AXES)
                if all(a["labels"] for a in axes):
                    break
            time.sleep(0.2)
        assert axes and all(a["labels"] for a in axes), axes
        rate, latency = axes
        assert any("," in str(v) and len(str(v)) >= 6 for v in rate["labels"]), rate  # 12,000
        assert any(len(str(v)) >= 6 for v in latency["labels"]), latency  # 10,000 ms and up
        for axis in axes:
            assert axis["widest"] <= axis["room"], axis  # the longest label fits its axis
    finally:
        driver.quit()
