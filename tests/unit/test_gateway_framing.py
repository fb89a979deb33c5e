"""The gateway's frames (producers/framing.py): one record per partition, bounded in events
and bytes, each event placed where librdkafka would place it alone."""

from __future__ import annotations

from producers.framing import FRAME_OVERHEAD, Framer
from schemas.frames import decode_frame, is_frame
from sealstream.topics import partition_for


def events(
    n: int, size: int = 100
) -> list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]]:
    return [
        (
            b"\x00" + bytes([i % 256]) * size,
            f"acme/e{i}".encode(),
            [("event_id", f"e{i}".encode()), ("tenant", "acme")],
        )
        for i in range(n)
    ]


def test_a_request_becomes_one_frame_per_partition_in_event_order() -> None:
    batch = events(120)
    records, placed = Framer("events.raw", 6, 500, 1_000_000).records(batch)
    assert len(records) == 6
    seen: list[bytes] = []
    for slot, (topic, value, key, headers, partition) in enumerate(records):
        assert topic == "events.raw" and is_frame(value) and key is None and headers is None
        framed = decode_frame(value)
        members = [i for i, s in enumerate(placed) if s == slot]
        assert [e.value for e in framed] == [batch[i][0] for i in members]  # in order
        for i, e in zip(members, framed, strict=True):
            assert partition == partition_for(batch[i][1], 6)
            assert e.key == batch[i][1] and e.headers == {
                "event_id": f"e{i}".encode(),
                "tenant": b"acme",
            }
        seen += [e.value for e in framed]
    assert sorted(seen) == sorted(v for v, _, _ in batch)


def test_a_lone_event_of_its_partition_stays_a_plain_record() -> None:
    batch = events(1)
    records, placed = Framer("events.raw", 6, 500, 1_000_000).records(batch)
    assert placed == [0]
    (_, value, key, headers, partition) = records[0]
    assert (value, key, headers) == batch[0] and partition == partition_for(key, 6)


def test_frames_are_bounded_in_events_and_bytes() -> None:
    batch = events(30)
    records, _ = Framer("events.raw", 1, 7, 1_000_000).records(batch)
    assert [len(decode_frame(r[1])) if is_frame(r[1]) else 1 for r in records] == [7, 7, 7, 7, 2]
    limit = 5_000
    big = events(30, size=1_000)
    records, _ = Framer("events.raw", 1, 500, limit).records(big)
    assert all(len(r[1]) <= limit - FRAME_OVERHEAD for r in records)
    assert sum(len(decode_frame(r[1])) if is_frame(r[1]) else 1 for r in records) == 30


def test_without_frames_or_a_partition_count_each_event_is_a_plain_record() -> None:
    batch = events(5)
    for framer in (
        Framer("events.raw", 6, 1, 1_000_000),
        Framer("events.raw", None, 500, 1_000_000),
    ):
        records, placed = framer.records(batch)
        assert records == [("events.raw", v, k, h, None) for v, k, h in batch]
        assert placed == [0, 1, 2, 3, 4]


class Recorder:
    """produce_batch that records what it was given and acknowledges at once."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[object, ...]]] = []

    def produce_batch(self, records: list[tuple[object, ...]]) -> object:
        self.batches.append(list(records))
        return f"batch-{len(self.batches)}"


async def test_requests_of_one_loop_turn_share_frames_but_tenants_never_do() -> None:
    import asyncio

    from producers.framing import FrameWindow

    producer = Recorder()
    window = FrameWindow(Framer("events.raw", 1, 500, 1_000_000), producer)
    one, two, other = events(3), events(2), events(4)
    results = await asyncio.gather(
        window.produce("acme", one), window.produce("acme", two), window.produce("globex", other)
    )
    # one batch per tenant; acme's two requests in one frame (one partition here)
    assert len(producer.batches) == 2
    acme, globex = producer.batches
    assert len(acme) == 1 and len(decode_frame(acme[0][1])) == 5
    assert [e.value for e in decode_frame(acme[0][1])] == [v for v, _, _ in one + two]
    assert [e.value for e in decode_frame(globex[0][1])] == [v for v, _, _ in other]
    assert results == [("batch-1", [0, 0, 0]), ("batch-1", [0, 0]), ("batch-2", [0, 0, 0, 0])]
    # a later turn is a window of its own
    assert await window.produce("acme", events(1)) == ("batch-3", [0])
    # a request with no events gets an empty batch of its own
    assert await window.produce("acme", []) == ("batch-4", [])
    assert producer.batches[-1] == []


def test_the_partition_count_follows_the_topic() -> None:
    from producers.framing import PartitionWatch

    framer = Framer("events.raw", None, 100, 1_000_000)
    counts = iter([RuntimeError("no such topic"), 6, 6, 12, RuntimeError("broker down")])

    def count() -> int:
        value = next(counts)
        if isinstance(value, Exception):
            raise value
        return value

    watch = PartitionWatch(framer, count, interval_s=3600)
    try:
        seen = []
        for _ in range(5):
            watch.check()
            seen.append(framer.partitions)
        # unknown: plain records; then framed by the topic's count, partitions added
        # included; a failed read keeps the count known
        assert seen == [None, 6, 6, 12, 12]
    finally:
        watch.close()
