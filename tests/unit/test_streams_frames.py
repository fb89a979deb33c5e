"""Frames on events.raw (schemas/frames.py): the worker signs each event of a frame into its
chain, resumes inside a frame after a restart, and dead-letters one event, not its frame."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.frames import FramedEvent, FrameError, decode_frame, encode_frame, is_frame
from sealstream.deadletters import DeadLetterHeaders
from sealstream.integrity import ChainHead, walk_chain
from streams.heads import CommittedHead, CommittedTail
from tests.unit.test_streams_agent import KEYS, make_harness, raw, signed_records


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[tuple[Any, Any, Any]]:
    yield from make_harness(tmp_path)


def frame(*values: bytes) -> bytes:
    return encode_frame(
        [
            FramedEvent(f"acme/{i}".encode(), {"tenant": b"acme", "event_id": b"e%d" % i}, v)
            for i, v in enumerate(values)
        ]
    )


def test_a_frame_round_trips_and_anything_else_is_refused() -> None:
    events = [FramedEvent(b"k", {"a": b"1"}, b"\x00v"), FramedEvent(None, {}, b"\x00w")]
    data = encode_frame(events)
    assert is_frame(data) and not is_frame(b"\x00\x00\x00\x00\x07x") and not is_frame(b"")
    assert decode_frame(data) == events
    for bad in (data[:-1], data + b"\x00", data[:2], b"\xfa\x01\x00", b"\x00" + data[1:]):
        with pytest.raises(FrameError):
            decode_frame(bad)


async def test_each_event_of_a_frame_is_signed_in_order_with_its_index(harness: Any) -> None:
    app, recorder, decoder = harness
    async with app.sign_events.test_context() as agent:
        await agent.put(raw("acme", 0), key=b"k", partition=0)
        await agent.put(frame(raw("acme", 1), raw("acme", 2), raw("acme", 3)), partition=0)
        await agent.put(raw("acme", 4), key=b"k", partition=0)
    signed = signed_records(recorder, decoder)
    assert [(r["event_id"], r["seq"], r["source_offset"]) for r in signed] == [
        ("acme-0", 1, 0),
        ("acme-1", 2, 1),
        ("acme-2", 3, 1),
        ("acme-3", 4, 1),
        ("acme-4", 5, 2),
    ]
    assert walk_chain(signed[0]["chain_id"], signed, KEYS, anchor=ChainHead()).ok
    indexes = [h.get("source_index") for t, _, _, h in recorder.sent if t == "events.signed"]
    assert indexes == [None, b"0", b"1", b"2", None]
    # each signed record carries its own event's key, not the frame's (which has none)
    keys = [h["event_id"] for t, _, _, h in recorder.sent if t == "events.signed"]
    assert keys == [b"acme-0", b"acme-1", b"acme-2", b"acme-3", b"acme-4"]


async def restart_at_frame(harness: Any, seq: int, committed_index: int) -> list[Any]:
    """A new owner of partition 0 whose committed output ends at event ``committed_index`` of
    the frame at offset 5 (chain at ``seq``); the frame of three comes again, then offset 6.
    What it signs."""
    app, recorder, decoder = harness
    head = CommittedHead(ChainHead(seq, "ab" * 32), 5, committed_index)
    recorder.tails = {0: CommittedTail(head, [])}
    recorder.resume = {0: 5}
    async with app.sign_events.test_context() as agent:
        agent.sent_offset = 5
        await agent.put(frame(raw("acme", 1), raw("acme", 2), raw("acme", 3)), partition=0)
        await agent.put(raw("acme", 4), key=b"k", partition=0)
    return signed_records(recorder, decoder)


async def test_a_restart_inside_a_frame_signs_only_the_rest_of_it(harness: Any) -> None:
    """The previous owner committed the first two events of the frame at offset 5 (a
    transaction can end inside a frame: faust commits on its own timer); the frame comes
    again, and only its third event is signed, after them in the chain."""
    signed = await restart_at_frame(harness, seq=7, committed_index=1)
    assert [(r["event_id"], r["seq"], r["source_offset"]) for r in signed] == [
        ("acme-3", 8, 5),
        ("acme-4", 9, 6),
    ]
    assert signed[0]["prev_hash"] == "ab" * 32


async def test_a_frame_done_whole_before_the_restart_is_not_signed_again(harness: Any) -> None:
    signed = await restart_at_frame(harness, seq=3, committed_index=2)
    assert [(r["seq"], r["source_offset"]) for r in signed] == [(4, 6)]


async def test_one_bad_event_of_a_frame_is_dead_lettered_alone(harness: Any) -> None:
    app, recorder, decoder = harness
    async with app.sign_events.test_context() as agent:
        await agent.put(
            frame(raw("acme", 1), b"\x00\x00\x00\x00\x63bad", raw("acme", 3)), partition=0
        )
        await agent.put(b"\xfa\x01\x02broken", partition=0)
        await agent.put(raw("acme", 4), key=b"k", partition=0)
    signed = signed_records(recorder, decoder)
    assert [(r["event_id"], r["seq"], r["source_offset"]) for r in signed] == [
        ("acme-1", 1, 0),
        ("acme-3", 2, 0),
        ("acme-4", 3, 2),
    ]
    dead = [(v, h) for t, v, _, h in recorder.sent if t == "events.raw.dlq"]
    assert len(dead) == 2
    # the event's own bytes and headers, with its coordinates: frame offset and index
    value, headers = dead[0]
    assert value == b"\x00\x00\x00\x00\x63bad" and headers["event_id"] == b"e1"
    letter = DeadLetterHeaders.from_headers(headers)
    assert (letter.offset, letter.index) == (0, 1)
    # a frame that does not decode goes whole, as any undecodable record does
    value, headers = dead[1]
    letter = DeadLetterHeaders.from_headers(headers)
    assert value == b"\xfa\x01\x02broken" and letter.reason == "undecodable_frame"
    assert (letter.offset, letter.index) == (1, None)


def test_a_rebalance_waits_for_the_frame_in_hand(harness: Any) -> None:
    """The agent handles a frame whole (streams/agent.py, ``handle_record``) because faust
    sends the revocation only once every started message is acked: that is
    ``stream_wait_empty``. Turned off, a rebalance could land inside a frame."""
    app, _, _ = harness
    assert app.conf.stream_wait_empty is True


def test_the_worker_producer_batches_what_the_settings_say(tmp_path: Path) -> None:
    """faust's 16 KiB batches (about ten signed records) capped the worker at one small batch
    per broker round trip."""
    for size in (None, 65536):
        extra = {} if size is None else {"producer_max_batch_bytes": size}
        app = next(make_harness(tmp_path / str(size), **extra))[0]
        assert app.conf.producer_max_batch_size == (size or 256 * 1024)


async def test_events_dead_lettered_after_the_last_signed_one_are_not_done_again(
    harness: Any,
) -> None:
    """The previous owner signed event 0 of the frame at offset 5 and dead-lettered events 1
    and 2 (committed with it), then died. Reconcile takes the dead letters' position too: only
    event 3 is handled again, and nothing is dead-lettered a second time."""
    app, recorder, decoder = harness
    recorder.tails = {0: CommittedTail(CommittedHead(ChainHead(7, "ab" * 32), 5, 0), [])}
    recorder.dead_positions = {0: (5, 2)}
    recorder.resume = {0: 5}
    bad = b"\x00\x00\x00\x00\x63bad"
    async with app.sign_events.test_context() as agent:
        agent.sent_offset = 5
        await agent.put(frame(raw("acme", 0), bad, bad, raw("acme", 3)), partition=0)
    signed = signed_records(recorder, decoder)
    assert [(r["event_id"], r["seq"], r["source_offset"]) for r in signed] == [("acme-3", 8, 5)]
    assert [t for t, _, _, _ in recorder.sent if t == "events.raw.dlq"] == []


def test_the_resume_head_is_the_later_of_the_signed_and_the_dead_lettered() -> None:
    from streams.heads import WHOLE, resume_head

    signed = CommittedHead(ChainHead(7, "ab" * 32), 5, 1)
    assert resume_head(signed, None) == [7, "ab" * 32, 5, 1]
    assert resume_head(signed, (5, 3)) == [7, "ab" * 32, 5, 3]
    assert resume_head(signed, (4, WHOLE)) == [7, "ab" * 32, 5, 1]  # older: the signed one
    plain = CommittedHead(ChainHead(7, "ab" * 32), 5)
    assert resume_head(plain, (5, 0)) == [7, "ab" * 32, 5, WHOLE]  # offset 5 was done whole
    assert resume_head(None, (2, WHOLE)) == [ChainHead().seq, ChainHead().hash, 2, WHOLE]
    assert resume_head(None, None) is None
