"""W3C trace context through the pipeline, and the spans of each stage (OpenTelemetry).

Each stage takes the trace context its input carries (the publisher's ``traceparent`` and
``tracestate`` HTTP headers at the gateway; the same names as Kafka headers after it), opens
one span of its own under it, and writes that span's context on what it produces:

- gateway: a ``SERVER`` span per ``POST /v1/events`` request (a new trace when the request
  brings none, or one that does not parse), whose context every event of the request carries
  on ``events.raw``;
- worker: a ``CONSUMER`` span per input record and trace (a frame holding events of three
  requests opens three), whose context the signed records carry on ``events.signed``;
- sinks: a ``CONSUMER`` span per written batch and trace.

Dead letters keep their record's headers, so a replayed event goes on in its trace. The hot
store keeps each row's ``trace_id`` and ``span_id`` (the worker's span that signed it), and
``sealstream audit`` shows them.

The trace context is observability metadata, not evidence: it travels in headers outside the
signature, so a writer of a topic could change it. What the signature covers is unchanged.

Spans are made by the OpenTelemetry SDK, always, so each stage has span ids to hand on; they
are exported only when an OTLP endpoint is configured with OpenTelemetry's own variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the exporter reads
its headers, timeout and the ``OTEL_BSP_*`` batching settings itself). ``OTEL_SDK_DISABLED=true``
stops exporting too. A publisher's "not sampled" flag is honoured: its span ids are handed on,
nothing of it is exported.

Parsing and formatting ``traceparent``/``tracestate`` is OpenTelemetry's propagator (version
rules, the all-zero ids, tracestate's list limits), not code of ours; only the sinks' per-row
reading of the ids (:func:`ids_of`) is a regular expression, as it runs once per stored row.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
# version 00's layout; a later version's first four fields are read the same way, and it may
# go on after them (version 00 may not; version ff is invalid), as OpenTelemetry reads it
_IDS = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?$", re.S)
_ZERO_TRACE, _ZERO_SPAN = b"0" * 32, b"0" * 16
_PROPAGATOR = TraceContextTextMapPropagator()
# OpenTelemetry warns of each malformed tracestate member it drops, quoting it (up to 8 KiB of
# a caller's text per request), and of each header past its length: a line or more per
# request, in every gateway log, at a caller's will. A header it cannot read is dropped, which
# is all a caller needs; errors of these modules still show.
for _name in ("opentelemetry.trace.span", "opentelemetry.trace.propagation.tracecontext"):
    logging.getLogger(_name).setLevel(logging.ERROR)

Headers = list[tuple[str, bytes]]


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads HTTP headers (str) and Kafka headers (bytes) alike."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeaderGetter()


def parent_of(carrier: Mapping[str, Any]) -> Context:
    """The trace context ``carrier`` brings (an empty context if none, or none valid), its
    ``tracestate`` cut to what is carried on (:func:`carried_state`)."""
    state = carrier.get(TRACESTATE)
    if state is not None:
        if isinstance(state, bytes):
            state = state.decode("ascii", "replace")
        carrier = {**carrier, TRACESTATE: carried_state(str(state))}
    return _PROPAGATOR.extract(carrier, getter=_GETTER)


MAX_STATE = 512  # characters of tracestate carried on: what W3C asks every vendor to keep
MAX_MEMBER = 128  # longer members go first when a tracestate is cut (W3C trace context, 3.3.1.5)


def carried_state(state: str) -> str:
    """``state`` as it is carried on every event of the request: whole members, those over
    MAX_MEMBER characters dropped, then members from the end until MAX_STATE holds. OpenTelemetry
    takes up to 8,192 characters, and the gateway copies the request's context onto each of its
    events: a 500-event batch wrote 4 MB of it to events.raw and again to events.signed."""
    if len(state) <= MAX_STATE:
        return state
    members = [m.strip() for m in state.split(",") if 0 < len(m.strip()) <= MAX_MEMBER]
    kept: list[str] = []
    for member in members:
        if len(",".join([*kept, member])) > MAX_STATE:
            break
        kept.append(member)
    return ",".join(kept)


def headers_of(span: Span) -> Headers:
    """``traceparent`` (and ``tracestate``, if any) of ``span``, as Kafka headers."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return [(name, carrier[name].encode()) for name in TRACE_HEADERS if name in carrier]


def ids_of(traceparent: bytes | str | None) -> tuple[str, str]:
    """``(trace_id, span_id)`` of a ``traceparent`` value; two empty strings if it is missing
    or malformed."""
    if isinstance(traceparent, str):
        traceparent = traceparent.encode("ascii", "replace")
    found = _IDS.match(traceparent or b"")
    if found is None or found.group(2) == _ZERO_TRACE or found.group(3) == _ZERO_SPAN:
        return "", ""
    version, rest = found.group(1), found.group(4)
    if version == b"ff" or (version == b"00" and rest):
        return "", ""
    return found.group(2).decode(), found.group(3).decode()


def export_configured(env: Mapping[str, str] = os.environ) -> bool:
    """Whether OpenTelemetry's variables name an OTLP endpoint for traces (and do not disable
    the SDK)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def failed(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``."""
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


class Tracing:
    """One stage's tracer. ``exporter``: where its spans go (tests pass the SDK's in-memory
    exporter); by default the OTLP exporter when one is configured, else nowhere."""

    def __init__(self, service: str, exporter: SpanExporter | None = None) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": f"sealstream-{service}"})
        )
        if exporter is None and export_configured():
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("sealstream")

    def start(
        self,
        name: str,
        carrier: Mapping[str, Any],
        kind: SpanKind,
        attributes: Mapping[str, Any] | None = None,
    ) -> Span:
        """A span under the trace context of ``carrier``, started now; the caller ends it."""
        return self.tracer.start_span(
            name, context=parent_of(carrier), kind=kind, attributes=attributes
        )

    @contextmanager
    def span(
        self,
        name: str,
        carrier: Mapping[str, Any],
        kind: SpanKind,
        attributes: Mapping[str, Any] | None = None,
    ) -> Iterator[Span]:
        """:meth:`start` as a context manager; an exception marks the span failed."""
        span = self.start(name, carrier, kind, attributes)
        try:
            yield span
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            span.end()

    def flush(self, timeout_ms: int = 5000) -> None:
        self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


@dataclass
class _Hop:
    span: Span
    headers: Headers
    events: int = 0


class Hops:
    """The spans a consumer stage opens for a unit of work (a worker's input record, a sink's
    batch): one per distinct trace context among its messages, ended together by :meth:`end`.

    ``hop(headers)`` answers the headers the stage writes for that message: those of its span
    under the message's context. A message without a trace context starts a trace of its own
    (a record no gateway wrote, such as another producer's)."""

    def __init__(self, tracing: Tracing, name: str, attributes: Mapping[str, Any]) -> None:
        self.tracing, self.name, self.attributes = tracing, name, attributes
        self.open: dict[tuple[bytes, bytes], _Hop] = {}

    def hop(self, headers: Mapping[str, bytes]) -> Headers:
        key = (headers.get(TRACEPARENT, b""), headers.get(TRACESTATE, b""))
        known = self.open.get(key)
        if known is None:
            carrier = {name: value for name, value in zip(TRACE_HEADERS, key, strict=True) if value}
            span = self.tracing.start(self.name, carrier, SpanKind.CONSUMER, self.attributes)
            known = self.open[key] = _Hop(span, headers_of(span))
        known.events += 1
        return known.headers

    def fail(self, exc: BaseException) -> None:
        for known in self.open.values():
            failed(known.span, exc)

    def end(self) -> None:
        for known in self.open.values():
            known.span.set_attribute("sealstream.events", known.events)
            known.span.end()
        self.open.clear()

    def __enter__(self) -> Hops:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        """The unit of work is over: its spans end, failed if it raised."""
        if exc is not None:
            self.fail(exc)
        self.end()
