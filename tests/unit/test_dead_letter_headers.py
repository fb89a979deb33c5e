"""Headers a dead letter and a replay carry (streams/processor.py, streams/dlq.py): the stage's
own ``dlq.*`` always stand, whatever the record brought, and a replay names only itself.
Readers take the last header of a name, so a copied one stands for the one written first."""

from __future__ import annotations

from sealstream.deadletters import DeadLetterHeaders
from streams.dlq import DeadLetter, replay_headers
from streams.processor import Source, dead_letter_headers


def test_a_dlq_header_on_the_input_never_stands_for_the_workers() -> None:
    """Forged on events.raw (the operator may write it), dlq.offset 999999999 was the one a
    restarted worker resumed the partition after: its events were skipped as replayed."""
    forged = {
        "dlq.offset": b"999999999", "dlq.topic": b"events.raw", "dlq.reason": b"nothing",
        "traceparent": b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "correlation_id": b"c-1",
    }  # fmt: skip
    source = Source("events.raw", 2, 41, forged)
    headers = dead_letter_headers(
        source,
        error=ValueError("bad"),
        reason="schema_mismatch",
        stage="validate",
        attempts=1,
        first_failure=1.0,
        last_failure=2.0,
    )
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))  # one of each
    found = dict(headers)
    assert (found["dlq.offset"], found["dlq.topic"]) == (b"41", b"events.raw")
    assert found["dlq.reason"] == b"schema_mismatch"
    assert found["traceparent"] == forged["traceparent"]  # the record's own headers go on
    assert found["correlation_id"] == b"c-1"


def test_a_replay_of_a_replay_names_the_last_replay_only() -> None:
    error = DeadLetterHeaders(
        reason="store_unavailable", stage="sink-clickhouse", message="down",
        topic="events.signed", partition=1, offset=7, attempts=1,
    )  # fmt: skip
    letter = DeadLetter(
        "events.signed.dlq", 0, 3, 0,
        {
            **{name: value.decode() for name, value in error.to_headers()},
            "replay.id": "first", "replay.of": "events.signed.dlq/0/1", "replay.source": "x",
            "tracestate": "vendor=1",
        },
        b"value",
    )  # fmt: skip
    headers = replay_headers(letter, "second")
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)) and not any(n.startswith("dlq.") for n in names)
    found = dict(headers)
    assert found["replay.id"] == b"second"
    assert found["replay.of"] == b"events.signed.dlq/0/3"
    assert found["replay.source"] == b"events.signed/1@7"
    assert found["tracestate"] == b"vendor=1"
