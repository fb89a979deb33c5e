"""The operations dashboard of ``sealstream up``: ``/dashboard`` (a page) and
``/dashboard/data.json`` (what it draws), served by the supervisor process.

Every two seconds a collector samples the running pipeline and keeps the last hour:

* the gateway's Prometheus metrics: accepted, rejected by reason, request latency quantiles
  (from the histogram's buckets) -> ingest rate and p50/p95/p99;
* consumer lag per stage, from Kafka (log end minus committed offset of each stage's group), in
  records: the worker's counts frames, not events (schemas/frames.py);
* ClickHouse through the sink's query endpoint: rows stored, end-to-end lag quantiles of the
  last five minutes (``stored_at - received_at``), dead letters by reason, the last ``verify``;
* the cold store: files written;
* the supervisor: each process's pid and restarts.

The page is static HTML + uPlot (npm package ``uplot``, installed by ``make`` into
ops/dashboard/web/node_modules and served from here: no CDN).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ops.settings import Settings
from sealstream.settings import StackSettings, UpSettings

log = logging.getLogger("ops.dashboard")

WEB = Path(__file__).parent / "web"
UPLOT = WEB / "node_modules" / "uplot" / "dist"
HISTORY = 1800  # samples (an hour at 2 s)


def scrape(url: str, tls: Any = None) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text -> {sample name: [(labels, value)]}; {} if unreachable. ``tls``: an
    ssl.SSLContext for an https URL."""
    try:
        text = httpx.get(url, timeout=2, verify=tls or True).text
    except httpx.HTTPError:
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def total(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in metrics.get(name, []))


def by_label(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, label: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in metrics.get(name, []):
        key = labels.get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


def histogram_quantiles(
    buckets: dict[float, float], quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> list[float | None]:
    """Quantiles of a cumulative Prometheus histogram ({upper bound: count}), interpolated
    linearly within the bucket, as histogram_quantile() does."""
    bounds = sorted(buckets)
    count = buckets.get(float("inf"), 0.0)
    if count <= 0:
        return [None for _ in quantiles]
    out: list[float | None] = []
    for q in quantiles:
        rank, lower, below = q * count, 0.0, 0.0
        for bound in bounds:
            upto = buckets[bound]
            if upto >= rank:
                if bound == float("inf"):
                    out.append(lower)
                else:
                    share = (rank - below) / (upto - below) if upto > below else 1.0
                    out.append(lower + (bound - lower) * share)
                break
            lower, below = bound, upto
    return out


class Collector:
    def __init__(
        self,
        up: UpSettings,
        supervisor: Any,
        stack: StackSettings,
        settings: Settings | None = None,
    ) -> None:
        self.up, self.supervisor, self.stack = up, supervisor, stack
        self.settings = settings or Settings()
        self.samples: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.latest: dict[str, Any] = {}
        self._stop = threading.Event()
        self._previous: tuple[float, float] | None = None
        self._query: Any = None
        self._consumer: Any = None
        self._admin: Any = None
        self._gateway: tuple[str, Any] | None = None

    # -- sources ------------------------------------------------------------------------

    def gateway(self) -> dict[str, Any]:
        if self._gateway is None:  # HTTPS (and a client certificate) as `up` reaches it
            from ops.mainjob import gateway_access

            access = gateway_access(self.settings.gateway, self.settings.keys.dir)
            self._gateway = (f"{access.url}/metrics", access.ssl_context())
        m = scrape(*self._gateway)
        accepted = total(m, "sealstream_gateway_events_accepted_total")
        # events refused, by reason (authorization denials included, as deny_*); requests
        # refused by authentication carry no events and are shown apart
        rejected = by_label(m, "sealstream_gateway_events_rejected_total", "reason")
        auth_failures = by_label(m, "sealstream_gateway_auth_failures_total", "reason")
        buckets: dict[float, float] = {}
        for labels, value in m.get("sealstream_gateway_request_duration_seconds_bucket", []):
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
        now = time.monotonic()
        rate = 0.0
        if self._previous is not None and now > self._previous[0]:
            rate = max(0.0, (accepted - self._previous[1]) / (now - self._previous[0]))
        self._previous = (now, accepted)
        p50, p95, p99 = (
            None if v is None else round(v * 1000, 2) for v in histogram_quantiles(buckets)
        )
        return {
            "up": bool(m),
            "accepted": int(accepted),
            "rejected": {k: int(v) for k, v in sorted(rejected.items()) if v},
            "rejected_total": int(sum(rejected.values())),
            "auth_failures": {k: int(v) for k, v in sorted(auth_failures.items()) if v},
            "ingest_rate": round(rate, 1),
            "ingest_latency_ms": {"p50": p50, "p95": p95, "p99": p99},
        }

    def lag(self) -> dict[str, int | None]:
        """Backlog per stage: log end minus committed offset, summed over partitions."""
        from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import AdminClient

        kafka, sink, worker = self.settings.kafka, self.settings.sink, self.settings.worker
        stages = {
            "workers (events.raw)": (worker.app_id, worker.raw_topic),
            "clickhouse sink (events.signed)": (sink.clickhouse_group, sink.signed_topic),
            "object sink (events.signed)": (sink.objects_group, sink.signed_topic),
        }
        if self._consumer is None:  # made once, kept for every sample
            self._consumer = Consumer(kafka.client_config(group_id="sealstream-dashboard"))
            self._admin = AdminClient(kafka.client_config())
        admin = self._admin
        out: dict[str, int | None] = {}
        for stage, (group, topic) in stages.items():
            try:
                meta = self._consumer.list_topics(topic, timeout=5).topics[topic]
                tps = [TopicPartition(topic, p) for p in meta.partitions]
                request = [ConsumerGroupTopicPartitions(group, tps)]
                future = admin.list_consumer_group_offsets(request)
                committed = {
                    tp.partition: tp.offset
                    for tp in future[group].result(timeout=5).topic_partitions
                }
                backlog = 0
                for tp in tps:
                    low, high = self._consumer.get_watermark_offsets(tp, timeout=5)
                    done = committed.get(tp.partition, -1)
                    backlog += high - (done if done >= 0 else low)
                out[stage] = backlog
            except Exception as exc:  # a stage it cannot see shows as unknown
                log.debug("lag of %s: %s", stage, exc)
                out[stage] = None
        return out

    def hot(self) -> dict[str, Any]:
        from ops.mainjob import endpoint_query

        if self._query is None:
            self._query = endpoint_query(self.settings.clickhouse)
        q = self._query
        try:
            rows = int(q("SELECT count() FROM events")[0][0])
            lag = q(
                "SELECT quantiles(0.5, 0.95, 0.99)(greatest(0, dateDiff('millisecond', "
                "received_at, stored_at))) FROM events "
                "WHERE stored_at > now64(3) - INTERVAL 5 MINUTE"
            )[0][0]
            dead = {str(r): int(n) for r, n in q(
                "SELECT reason, count() FROM dead_letters GROUP BY reason ORDER BY reason"
            )}  # fmt: skip
            verify = q(
                "SELECT decided_at, decision, reason_code, detail FROM audit_decisions "
                "WHERE action = 'verify' ORDER BY decided_at DESC LIMIT 1"
            )
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            return {"up": False, "error": str(exc)[:300]}
        last = None
        if verify:
            at, decision, reason, _detail = verify[0]
            last = {"at": str(at), "ok": str(decision) == "ALLOW", "reason": str(reason)}
        quantiles = [  # no rows in the window: NaN or null
            round(float(v), 1) if v is not None and v == v else None for v in (lag or [])
        ]
        return {
            "up": True,
            "rows": rows,
            "e2e_lag_ms": dict(zip(("p50", "p95", "p99"), quantiles or [None] * 3, strict=False)),
            "dead_letters": dead,
            "dead_letters_total": sum(dead.values()),
            "last_verify": last,
        }

    def cold(self) -> dict[str, Any]:
        from sinks.objects.store import ObjectStore

        settings = self.settings.objects
        try:
            listing = ObjectStore(settings).listing(settings.prefix)
            files = [f for f in listing if f.path.endswith(".avro")]
        except Exception as exc:  # shown, not fatal
            return {"up": False, "error": str(exc)[:300]}
        return {"up": True, "files": len(files), "bytes": sum(f.size for f in files)}

    # -- loop -----------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        snapshot = {
            "t": time.time(),
            "gateway": self.gateway(),
            "lag": self.lag(),
            "hot": self.hot(),
            "cold": self.cold(),
            "processes": self.supervisor.state(),
        }
        self.latest = snapshot
        self.samples.append(
            {
                "t": snapshot["t"],
                "rate": snapshot["gateway"]["ingest_rate"],
                "p50": snapshot["gateway"]["ingest_latency_ms"]["p50"],
                "p99": snapshot["gateway"]["ingest_latency_ms"]["p99"],
                "e2e_p50": snapshot["hot"].get("e2e_lag_ms", {}).get("p50"),
                "e2e_p99": snapshot["hot"].get("e2e_lag_ms", {}).get("p99"),
                "lag": sum(v for v in snapshot["lag"].values() if v is not None),
            }
        )
        return snapshot

    def run(self, every_s: float = 2.0) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # outlive a bad sample
                log.exception("dashboard sample failed")
            self._stop.wait(every_s)

    def stop(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class Dashboard:
    def __init__(self, server: Any, collector: Collector) -> None:
        self.server, self.collector = server, collector

    def stop(self) -> None:
        self.server.should_exit = True
        self.collector.stop()


def create_app(collector: Collector) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    async def page(_: Any) -> Response:
        return FileResponse(WEB / "index.html", media_type="text/html")

    async def data(_: Any) -> Response:
        return JSONResponse({"latest": collector.latest, "history": list(collector.samples)})

    async def asset(request: Any) -> Response:
        name = request.path_params["name"]
        files = {
            "uPlot.iife.min.js": UPLOT / "uPlot.iife.min.js",
            "uPlot.min.css": UPLOT / "uPlot.min.css",
            "dashboard.js": WEB / "dashboard.js",
        }
        path = files.get(name)
        if path is None or not path.exists():
            return JSONResponse({"error": {"code": "not_found", "message": name}}, 404)
        return FileResponse(path)

    async def root(_: Any) -> Response:
        return RedirectResponse("/dashboard")

    return Starlette(
        routes=[
            Route("/", root),
            Route("/dashboard", page),
            Route("/dashboard/data.json", data),
            Route("/dashboard/static/{name}", asset),
        ]
    )


def start_dashboard(
    up: UpSettings, supervisor: Any, stack: StackSettings, settings: Settings | None = None
) -> Dashboard:
    """Start the collector and the page's server in threads."""
    import uvicorn

    collector = Collector(up, supervisor, stack, settings)
    threading.Thread(target=collector.run, name="dashboard-collector", daemon=True).start()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(collector),
            host=up.dashboard_host,
            port=up.dashboard_port,
            log_level="warning",
            access_log=False,
            log_config=None,  # the process's handler (sealstream/logs.py), not uvicorn's
        )
    )
    threading.Thread(target=server.run, name="dashboard", daemon=True).start()
    return Dashboard(server, collector)
