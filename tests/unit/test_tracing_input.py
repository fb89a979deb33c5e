"""What a caller's trace headers may do to the gateway (sealstream/tracing.py): a malformed
tracestate is dropped without a log line quoting it (OpenTelemetry warned of each member, up
to 8 KiB of the caller's text per request), and never costs the caller's traceparent."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

from sealstream.tracing import MAX_STATE, carried_state, ids_of, parent_of

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


def test_a_long_tracestate_is_cut_to_whole_members_within_512_characters() -> None:
    """The gateway copies the request's context onto each of its events: OpenTelemetry's 8 KB
    of tracestate, 500 times a batch, on events.raw and again on events.signed."""
    long_member = "big=" + "x" * 200  # over 128: dropped first
    members = [f"v{i}=" + "y" * 40 for i in range(30)]
    state = ",".join([members[0], long_member, *members[1:]])
    cut = carried_state(state)
    assert len(cut) <= MAX_STATE and cut.startswith(members[0] + "," + members[1])
    assert cut.split(",") == members[: len(cut.split(","))]  # whole members, in order
    assert carried_state("a=1, b=2") == "a=1, b=2"  # short ones as they are
    context = trace.get_current_span(parent_of({"traceparent": PARENT, "tracestate": state}))
    assert len(context.get_span_context().trace_state.to_header()) <= MAX_STATE


@pytest.mark.parametrize(
    ("traceparent", "ids"),
    [
        (PARENT, (TRACE, "00f067aa0ba902b7")),
        (PARENT + "-more", ("", "")),  # version 00 ends at the flags
        ("ff" + PARENT[2:], ("", "")),  # version ff is invalid
        ("01" + PARENT[2:] + "-more", (TRACE, "00f067aa0ba902b7")),  # a later version may go on
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", ("", "")),
        ("00-" + TRACE.upper() + "-00f067aa0ba902b7-01", ("", "")),
        (None, ("", "")),
    ],
)
def test_ids_are_read_as_opentelemetry_reads_a_traceparent(
    traceparent: str | None, ids: tuple[str, str]
) -> None:
    assert ids_of(traceparent) == ids
    assert ids_of(traceparent.encode() if traceparent else None) == ids
