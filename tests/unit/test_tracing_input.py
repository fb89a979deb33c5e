"""What a caller's trace headers may do to the gateway (sealstream/tracing.py): a malformed
tracestate is dropped without a log line quoting it (OpenTelemetry warned of each member, up
to 8 KiB of the caller's text per request), and never costs the caller's traceparent."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

from sealstream.tracing import parent_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    "state",
    [
        ",".join(f"BAD KEY {i}=\x1b[31m{'x' * 200}" for i in range(30)),  # 30 bad members
        "a=" + "x" * 9000,  # past the 512-character member limit
        "a=1,a=2",  # a key twice
    ],
)
def test_a_malformed_tracestate_is_dropped_without_quoting_it(
    state: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        context = trace.get_current_span(parent_of({"traceparent": PARENT, "tracestate": state}))
    found = context.get_span_context()
    assert format(found.trace_id, "032x") == TRACE  # the trace goes on
    assert len(found.trace_state) == 0
    quoted = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]
    assert quoted == []
