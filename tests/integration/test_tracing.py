"""W3C trace context end to end on `sealstream up`: a request's ``traceparent`` is the parent
of the gateway's span, whose context the worker's span continues, whose context the sink's
span continues; the hot row and ``sealstream audit`` name the trace and the worker's span.

Every process exports its spans over OTLP/HTTP (OpenTelemetry's own variables) to a receiver
this test runs, which decodes them with OpenTelemetry's protobuf types."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.upjob import wait_for
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP trace receiver: every span any process sent, by service name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                )

                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                receiver.add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, request: Any) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    with self.lock:
                        self.spans.append(
                            {
                                "service": service,
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "trace_state": span.trace_state,
                                "attributes": {a.key: a.value for a in span.attributes},
                            }
                        )

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    try:
        yield found
    finally:
        found.close()


def test_one_trace_covers_gateway_worker_and_sink_and_the_row_names_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    job = Pipeline(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="200",  # ms: export soon after each span ends
    )
    try:
        job.start()
        token = job.token("acme", roles=("publisher",), scopes=("events:write",))
        now = dt.datetime.now(dt.UTC).isoformat()
        events = [
            {
                "event_id": str(uuid.uuid4()),
                "tenant": "acme",
                "event_type": "login",
                "occurred_at": now,
                "payload": {
                    "user_id": f"u{i}",
                    "username": "ann",
                    "success": True,
                    "method": "SSO",
                },
            }
            for i in range(3)
        ]
        traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
        answer = httpx.post(
            f"{job.gateway_url}/v1/events",
            json={"events": events},
            headers={
                "authorization": f"Bearer {token}",
                "traceparent": traceparent,
                "tracestate": "vendor=opaque",
            },
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        assert len(answer.json()["accepted"]) == 3

        def stored() -> list[list[Any]]:
            ids = ", ".join(f"'{e['event_id']}'" for e in events)
            rows = job.query(
                f"SELECT event_id, trace_id, span_id FROM events WHERE event_id IN ({ids})"
            )
            return rows if len(rows) == 3 else []

        rows = wait_for(stored, 180, "the three events in the hot store")

        def spans() -> dict[str, list[dict[str, Any]]]:
            by_service: dict[str, list[dict[str, Any]]] = {}
            for span in receiver.of_trace(CALLER_TRACE):
                by_service.setdefault(span["service"], []).append(span)
            signed = {span for _, _, span in rows}  # each row's span: a worker's, exported
            workers = {s["span_id"] for s in by_service.get("sealstream-worker", [])}
            # every worker span has a ClickHouse sink span and an object sink span under it
            stores = [
                {s["parent"] for s in by_service.get(f"sealstream-sink-{name}", [])}
                for name in ("clickhouse", "objects")
            ]
            complete = signed <= workers and all(workers <= parents for parents in stores)
            return by_service if complete and "sealstream-gateway" in by_service else {}

        found = wait_for(spans, 120, "the spans of gateway, worker and both sinks")
        (gateway,) = found["sealstream-gateway"]
        # the request's traceparent is the gateway span's parent; each hop the next one's
        assert (gateway["name"], gateway["parent"]) == ("POST /v1/events", CALLER_SPAN)
        workers = found["sealstream-worker"]
        assert {w["parent"] for w in workers} == {gateway["span_id"]}
        # the caller's tracestate goes along with its trace
        assert {s["trace_state"] for s in [gateway, *workers]} == {"vendor=opaque"}
        # a span per input record (a frame per partition): the three events, each signed once
        assert sum(w["attributes"]["sealstream.events"].int_value for w in workers) == 3
        for name in ("clickhouse", "objects"):
            parents = {s["parent"] for s in found[f"sealstream-sink-{name}"]}
            assert parents == {w["span_id"] for w in workers}, name

        # every row: the caller's trace and the worker's span that signed it
        assert {trace for _, trace, _ in rows} == {CALLER_TRACE}
        event_id, _, span_id = rows[0]
        done = job.cli("audit", str(event_id), "--json", timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        trail = json.loads(done.stdout)
        assert trail["trace"] == {"trace_id": CALLER_TRACE, "span_id": span_id}
    finally:
        job.stop()
