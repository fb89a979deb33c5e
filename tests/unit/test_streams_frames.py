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


async def test_a_restart_inside_a_frame_signs_only_the_rest_of_it(harness: Any) -> None:
    """The previous owner committed the first two events of the frame at offset 5 (a
    transaction can end inside a frame: faust commits on its own timer); the frame comes
    again, and only its third event is signed, after them in the chain."""
    app, recorder, decoder = harness
    recorder.tails = {0: CommittedTail(CommittedHead(ChainHead(7, "ab" * 32), 5, 1), [])}
    recorder.resume = {0: 5}
    async with app.sign_events.test_context() as agent:
        agent.sent_offset = 5
        await agent.put(frame(raw("acme", 1), raw("acme", 2), raw("acme", 3)), partition=0)
        await agent.put(raw("acme", 4), key=b"k", partition=0)
    signed = signed_records(recorder, decoder)
    assert [(r["event_id"], r["seq"], r["source_offset"]) for r in signed] == [
        ("acme-3", 8, 5),
        ("acme-4", 9, 6),
    ]
    assert signed[0]["prev_hash"] == "ab" * 32


async def test_a_frame_done_whole_before_the_restart_is_not_signed_again(harness: Any) -> None:
    app, recorder, decoder = harness
    recorder.tails = {0: CommittedTail(CommittedHead(ChainHead(3, "ab" * 32), 5, 2), [])}
    recorder.resume = {0: 5}
    async with app.sign_events.test_context() as agent:
        agent.sent_offset = 5
        await agent.put(frame(raw("acme", 1), raw("acme", 2), raw("acme", 3)), partition=0)
        await agent.put(raw("acme", 4), key=b"k", partition=0)
    assert [(r["seq"], r["source_offset"]) for r in signed_records(recorder, decoder)] == [(4, 6)]


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


async def test_a_partition_revoked_in_the_middle_of_a_frame_leaves_the_rest_to_its_owner(
    harness: Any,
) -> None:
    """The rebalance signals run while the agent awaits a send: the rest of the frame is the
    next owner's (it resumes after the last committed event), never signed here on a
    forgotten chain head (that would start the chain again at seq 1)."""
    from faust.types import TP

    app, recorder, decoder = harness
    send = recorder.send

    async def send_then_lose(source: Any, topic: str, *args: Any) -> None:
        await send(source, topic, *args)
        if topic == "events.signed" and source.index == 1:
            await app.on_partitions_revoked.send(revoked={TP("events.raw", 0)})
            await app.on_partitions_assigned.send(assigned={TP("events.raw", 1)})

    recorder.send = send_then_lose  # type: ignore[method-assign]
    async with app.sign_events.test_context() as agent:
        await agent.put(frame(*(raw("acme", i) for i in range(5))), partition=0)
    signed = signed_records(recorder, decoder)
    assert [(r["event_id"], r["seq"]) for r in signed] == [("acme-0", 1), ("acme-1", 2)]
