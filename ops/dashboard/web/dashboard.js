// The operations dashboard: polls /dashboard/data.json every 2 s, fills the tiles and tables,
// and draws the time series with uPlot (served locally from node_modules).
"use strict";

const fmt = (v) => (v === null || v === undefined ? "-" : String(v));
const set = (id, v) => { document.getElementById(id).textContent = fmt(v); };

function rows(id, entries, head) {
  const table = document.getElementById(id);
  table.replaceChildren();
  const tr = table.insertRow();
  head.forEach((h) => { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
  for (const cells of entries) {
    const r = table.insertRow();
    cells.forEach((c) => { r.insertCell().textContent = fmt(c); });
  }
}

let rateChart = null;
let latencyChart = null;

// An axis as wide as its longest tick label (uPlot's default is a fixed 50 px, which cut
// "10,000" ms to "0,000"): the uPlot axis auto-size recipe, measured with the axis's own font.
function axisSize(self, values, axisIdx, cycleNum) {
  const axis = self.axes[axisIdx];
  if (cycleNum > 1) return axis._size; // settled: stop re-measuring
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  if (longest !== "") {
    self.ctx.font = axis.font[0];
    size += self.ctx.measureText(longest).width / devicePixelRatio;
  }
  return Math.ceil(size) + 4;
}

function chart(el, series, data, unit) {
  if (typeof uPlot === "undefined") return null; // the page still shows every number
  const width = document.getElementById(el).clientWidth || 600;
  const axes = [{}, { size: axisSize, label: unit, labelSize: 18 }];
  return new uPlot({ width, height: 220, series: [{}, ...series], axes }, data,
                   document.getElementById(el));
}

function draw(history) {
  const t = history.map((s) => s.t);
  const rate = [t, history.map((s) => s.rate)];
  const latency = [t, history.map((s) => s.p50), history.map((s) => s.p99),
                   history.map((s) => s.e2e_p50), history.map((s) => s.e2e_p99)];
  if (rateChart === null) {
    rateChart = chart("chart-rate", [{ label: "events/s", stroke: "#2f6fde", width: 2 }], rate,
                      "events/s");
    latencyChart = chart("chart-latency", [
      { label: "ingest p50", stroke: "#2f6fde" }, { label: "ingest p99", stroke: "#7aa5f0" },
      { label: "e2e p50", stroke: "#d9822b" }, { label: "e2e p99", stroke: "#f0b27a" }], latency,
      "ms");
  } else {
    rateChart.setData(rate);
    latencyChart.setData(latency);
  }
}

async function refresh() {
  try {
    const response = await fetch("/dashboard/data.json", { cache: "no-store" });
    const { latest, history } = await response.json();
    if (!latest || !latest.gateway) return;
    const g = latest.gateway, h = latest.hot, c = latest.cold;
    set("ingest-rate", g.ingest_rate);
    set("accepted", g.accepted);
    set("rejected", g.rejected_total);
    set("ingest-p50", g.ingest_latency_ms.p50);
    set("ingest-p95", g.ingest_latency_ms.p95);
    set("ingest-p99", g.ingest_latency_ms.p99);
    set("rows", h.up ? h.rows : "?");
    set("dead", h.up ? h.dead_letters_total : "?");
    set("e2e-p50", h.up ? h.e2e_lag_ms.p50 : "?");
    set("e2e-p99", h.up ? h.e2e_lag_ms.p99 : "?");
    set("files", c.up ? c.files : "?");
    const v = document.getElementById("verify");
    v.textContent = h.last_verify ? (h.last_verify.ok ? "clean" : "FINDINGS") : "none yet";
    v.className = "v " + (h.last_verify ? (h.last_verify.ok ? "good" : "bad") : "");
    rows("lag", Object.entries(latest.lag), ["stage", "backlog"]);
    rows("reasons", Object.entries(g.rejected), ["reason", "events"]);
    rows("auth", Object.entries(g.auth_failures || {}), ["reason", "requests"]);
    rows("dlq", Object.entries(h.dead_letters || {}), ["reason", "dead letters"]);
    rows("processes", latest.processes.map((p) => [p.name, p.pid, p.running ? "up" : "restarting", p.restarts]),
         ["process", "pid", "state", "restarts"]);
    document.getElementById("updated").textContent =
      "updated " + new Date(latest.t * 1000).toLocaleTimeString();
    draw(history);
  } catch (err) {
    document.getElementById("updated").textContent = "no data: " + err;
  }
}

refresh();
setInterval(refresh, 2000);
