"""The faust agent in faust's test context (no broker): signing, chaining, routing, masking
and dead letters, with the Kafka writers replaced by a recorder."""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import Catalog
from schemas.samples import payment_event
from schemas.serde import Decoder, Encoder
from sealstream.integrity import ChainHead, walk_chain
from sealstream.keys import HmacKeyring
from sealstream.settings import KafkaSettings, WorkerSettings
from streams.app import create_app
from streams.dedup import SeenWindow, dedup_key
from streams.enrich import ClientAttributes, PiiClassification, Pipeline, TimeFields
from streams.heads import CommittedHead, CommittedTail, RawRecord
from streams.mask import Masker
from streams.outputs import Outputs
from streams.processor import Processor, Source
from streams.route import RoutingTable

KEYS = HmacKeyring("k1", {"k1": b"s" * 32})
RAW_ID, SIGNED_ID, CHECKPOINT_ID = 7, 8, 9


class Recorder(Outputs):
    def __init__(self, settings: WorkerSettings, encoder: Encoder) -> None:
        super().__init__(None, settings, encoder)
        self.sent: list[tuple[str, bytes, int, dict[str, bytes]]] = []
        self.resume: dict[int, int] = {}  # partition -> the group's committed offset
        self.log: dict[int, list[RawRecord]] = {}  # what read_range finds in events.raw
        self.reads: list[tuple[int, int, int]] = []
        self.done: list[tuple[int, int, int]] = []  # offsets handed back to faust as acked
        self.faust_committed: dict[int, int] = {}  # faust's own view, when it differs
        self.tails: dict[int, CommittedTail] = {}  # the committed output, per partition
        self.restarted: list[tuple[int, bool]] = []  # transactions aborted at assignments
        # (offset, index) of the newest committed dead letter, per input partition
        self.dead_positions: dict[int, tuple[int, int]] = {}

    async def committed_tail(
        self, kafka: Any, partition: int, decoder: Any, ours: Any = None
    ) -> CommittedTail:
        # no earlier output unless a test says so: the table is the only state
        return self.tails.get(partition, CommittedTail(None, []))

    async def dead_letter_position(self, kafka: Any, partition: int) -> tuple[int, int] | None:
        return self.dead_positions.get(partition)

    async def resume_offset(self, kafka: Any, partition: int) -> int | None:
        return self.resume.get(partition)

    def consumer_committed(self, partition: int) -> int | None:
        return self.faust_committed.get(partition, self.resume.get(partition))

    async def mark_done(self, partition: int, start: int, end: int) -> None:
        self.done.append((partition, start, end))

    async def restart_transaction(self, partition: int, begin: bool) -> bool:
        self.restarted.append((partition, begin))
        return False

    async def read_range(self, kafka: Any, partition: int, start: int, end: int) -> list[Any]:
        self.reads.append((partition, start, end))
        return [r for r in self.log.get(partition, []) if start <= r.offset < end]

    async def send(
        self,
        source: Source,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int,
        headers: list[tuple[str, bytes]],
    ) -> None:
        self.sent.append((topic, value, partition, dict(headers)))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[tuple[Any, Recorder, Decoder]]:
    yield from make_harness(tmp_path)


def make_harness(
    tmp_path: Path, signed_limit: int = 1_000_000, **settings_overrides: Any
) -> Iterator[tuple[Any, Recorder, Decoder]]:
    catalog = Catalog()
    schemas = {
        RAW_ID: catalog.event_schema("payment"),
        SIGNED_ID: catalog.signed_schema(),
        CHECKPOINT_ID: catalog.checkpoint_schema(),
    }
    decoder = Decoder(lambda i: json.dumps(schemas[i]) if i in schemas else None)
    pii = {"payment": catalog.pii_fields("payment")}
    routes = RoutingTable.model_validate(
        {"rules": [{"when": {"tenant": "coldco"}, "route": "cold"}]}
    )
    processor = Processor(
        decoder,
        Pipeline(
            [TimeFields(), ClientAttributes(), PiiClassification({"payment": "confidential"}, pii)]
        ),
        Masker(HmacKeyring("m", {"m": b"m" * 32}), pii),
        routes,
        KEYS,
        Encoder(SIGNED_ID, schemas[SIGNED_ID]),
    )
    settings = WorkerSettings(
        **{
            "processing_guarantee": "at_least_once",
            "partitions": 2,
            "checkpoint_every": 3,
            "data_dir": tmp_path,
            **settings_overrides,
        }
    )
    recorder = Recorder(settings, Encoder(CHECKPOINT_ID, schemas[CHECKPOINT_ID]))
    app = create_app(
        settings,
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        processor,
        KEYS,
        recorder.checkpoint_encoder,
        outputs=recorder,
        signed_limit=signed_limit,
    )
    app.finalize()
    app.conf.store = "memory://"
    yield app, recorder, decoder
    # Creating the stream built faust's consumer thread service with its own event loop; the
    # thread never starts in the test context, so close that loop here (no leaked sockets).
    thread = getattr(app.consumer, "_thread", None)
    loop = getattr(thread, "thread_loop", None)
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()


def raw(tenant: str, i: int, event_id: str | None = None) -> bytes:
    now = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)
    record = payment_event(i, tenant, now, event_id or f"{tenant}-{i}")
    return Encoder(RAW_ID, Catalog().event_schema("payment")).encode(record)


async def test_agent_signs_chains_routes_and_dead_letters(harness: Any) -> None:
    app, recorder, decoder = harness
    async with app.sign_events.test_context() as agent:
        for i in range(4):
            await agent.put(raw("acme", i), key=b"k", partition=0)
        await agent.put(b"\x00garbage!", key=b"k", partition=0)
        await agent.put(raw("coldco", 0), key=b"k", partition=1)
    signed = [decoder.decode(v)[1] for t, v, _, _ in recorder.sent if t == "events.signed"]
    assert [r["seq"] for r in signed if r["chain_id"].endswith("/0")] == [1, 2, 3, 4]
    report = walk_chain(
        signed[0]["chain_id"],
        [r for r in signed if r["chain_id"].endswith("/0")],
        KEYS,
        anchor=ChainHead(),
    )
    assert report.ok
    assert signed[0]["masked_fields"] == ["card_last4", "payer_email"]
    assert "u0@example.test" in signed[0]["payload_json"]
    assert "u0@example.test" not in signed[0]["hot_payload_json"]
    assert {r["tenant"]: r["route"] for r in signed} == {"acme": "both", "coldco": "cold"}
    dead = [(v, h) for t, v, _, h in recorder.sent if t == "events.raw.dlq"]
    assert len(dead) == 1 and dead[0][0] == b"\x00garbage!"
    assert dead[0][1]["dlq.reason"] in (b"undecodable", b"unknown_schema")
    checkpoints = [decoder.decode(v)[1] for t, v, _, _ in recorder.sent if t == "audit.checkpoints"]
    assert [(c["chain_id"].endswith("/0"), c["seq"]) for c in checkpoints] == [(True, 3)]


async def test_agent_processes_a_skipped_range_first_and_in_order(harness: Any) -> None:
    """After a restart faust's consumer was seen to start a partition past the group's
    committed offset; the agent must read the skipped records back and sign them first."""
    app, recorder, decoder = harness
    recorder.resume = {0: 0}
    recorder.log = {0: [RawRecord("events.raw", 0, i, b"k", raw("acme", i), []) for i in (0, 1)]}
    async with app.sign_events.test_context() as agent:
        agent.sent_offset = 2  # the consumer hands over offset 2 first: 0 and 1 were skipped
        for i in (2, 3):
            await agent.put(raw("acme", i), key=b"k", partition=0)
    signed = [decoder.decode(v)[1] for t, v, _, _ in recorder.sent if t == "events.signed"]
    assert [(r["seq"], r["source_offset"]) for r in signed] == [(1, 0), (2, 1), (3, 2), (4, 3)]
    assert recorder.reads == [(0, 0, 2)]
    assert recorder.done == [(0, 0, 2)]  # else faust never commits the partition again
    assert walk_chain(signed[0]["chain_id"], signed, KEYS, anchor=ChainHead()).ok


async def test_agent_skips_what_the_group_already_committed(harness: Any) -> None:
    app, recorder, decoder = harness
    recorder.resume = {0: 1}  # offset 0 is in a committed transaction: a redelivery
    async with app.sign_events.test_context() as agent:
        for i in (0, 1):
            await agent.put(raw("acme", i), key=b"k", partition=0)
    signed = [decoder.decode(v)[1] for t, v, _, _ in recorder.sent if t == "events.signed"]
    assert [(r["seq"], r["source_offset"]) for r in signed] == [(1, 1)]
    assert recorder.reads == []


async def test_offsets_done_before_the_restart_are_handed_back_to_faust(harness: Any) -> None:
    """Seen in CI: the group committed offset 2 while the committed output already held the
    events of offsets 2 and 3 (faust acks an event only when it takes the next one); faust
    then delivered offset 4 first. Nothing is re-signed, and 2..3 go back to faust as done,
    or it never commits the partition again."""
    app, recorder, decoder = harness
    recorder.tails = {0: CommittedTail(CommittedHead(ChainHead(4, "ab" * 32), 3), [])}
    recorder.resume = {0: 2}
    async with app.sign_events.test_context() as agent:
        agent.sent_offset = 4
        await agent.put(raw("acme", 4), key=b"k", partition=0)
    signed = [decoder.decode(v)[1] for t, v, _, _ in recorder.sent if t == "events.signed"]
    assert [(r["seq"], r["source_offset"]) for r in signed] == [(5, 4)]
    assert recorder.reads == []  # nothing to process again
    assert recorder.done == [(0, 2, 4)]


def signed_records(recorder: Recorder, decoder: Decoder) -> list[dict[str, Any]]:
    return [decoder.decode(v)[1] for t, v, _, _ in recorder.sent if t == "events.signed"]


async def test_a_second_record_of_the_same_event_is_not_signed(harness: Any) -> None:
    """A gateway killed between Kafka's ack and its 202 gets the client's retry produced
    again: the same (tenant, event_id) twice on one partition. Only the first is signed; the
    same id from another tenant is another event."""
    app, recorder, decoder = harness
    async with app.sign_events.test_context() as agent:
        await agent.put(raw("acme", 0), key=b"k", partition=0)
        await agent.put(raw("acme", 1), key=b"k", partition=0)
        await agent.put(raw("acme", 0), key=b"k", partition=0)  # the retry, produced again
        await agent.put(raw("globex", 7, event_id="acme-0"), key=b"k", partition=0)
        await agent.put(raw("acme", 2), key=b"k", partition=0)
    signed = signed_records(recorder, decoder)
    assert [(r["tenant"], r["event_id"], r["seq"], r["source_offset"]) for r in signed] == [
        ("acme", "acme-0", 1, 0),
        ("acme", "acme-1", 2, 1),
        ("globex", "acme-0", 3, 3),
        ("acme", "acme-2", 4, 4),
    ]
    assert walk_chain(signed[0]["chain_id"], signed, KEYS, anchor=ChainHead()).ok
    # the window is rebuilt from these headers after a restart
    headers = [h for t, _, _, h in recorder.sent if t == "events.signed"]
    assert (headers[2]["tenant"], headers[2]["event_id"]) == (b"globex", b"acme-0")


async def test_the_window_comes_back_from_the_committed_output(harness: Any) -> None:
    """After a restart the window is what the committed output signed recently: an event
    signed before the restart is dropped, one signed before the window began is not."""
    app, recorder, decoder = harness
    now_ms = int(time.time() * 1000)
    too_old = now_ms - int(WorkerSettings().dedup_window_s * 1000) - 60_000
    recorder.tails = {
        0: CommittedTail(
            CommittedHead(ChainHead(2, "ab" * 32), 1),
            [(dedup_key("acme", "acme-0"), too_old), (dedup_key("acme", "acme-1"), now_ms)],
        )
    }
    recorder.resume = {0: 2}
    async with app.sign_events.test_context() as agent:
        agent.sent_offset = 2
        await agent.put(raw("acme", 1), key=b"k", partition=0)  # signed before the restart
        await agent.put(raw("acme", 0), key=b"k", partition=0)  # signed long ago
    signed = signed_records(recorder, decoder)
    assert [(r["event_id"], r["seq"], r["source_offset"]) for r in signed] == [("acme-0", 3, 3)]
    assert signed[0]["prev_hash"] == "ab" * 32


def test_seen_window_is_bounded_by_count_and_age() -> None:
    window = SeenWindow(max_entries=3, max_age_ms=1_000)
    for i in range(4):
        window.add(f"k{i}", 10_000 + i)
    assert len(window) == 3
    assert not window.seen("k0", 10_004)  # pushed out by count
    assert window.seen("k1", 10_004)
    assert not window.seen("k1", 11_002)  # older than the window
    assert window.seen("k3", 11_002)
    off = SeenWindow(max_entries=0, max_age_ms=1_000)
    off.add("k", 1)
    assert not off.seen("k", 1)


def raw_with_note(tenant: str, i: int, note_bytes: int) -> bytes:
    now = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)
    record = payment_event(i, tenant, now, f"{tenant}-{i}")
    record["payload"]["merchant_id"] = "m" * note_bytes
    return Encoder(RAW_ID, Catalog().event_schema("payment")).encode(record)


async def test_an_event_whose_signed_record_is_too_large_is_dead_lettered_not_skipped(
    tmp_path: Path,
) -> None:
    """An attack run got a 202 for an event whose signed record (the payload twice) the
    worker could not produce: it was skipped, in neither store, its chain with a gap."""
    for app, recorder, decoder in make_harness(tmp_path, signed_limit=6000):
        async with app.sign_events.test_context() as agent:
            await agent.put(raw("acme", 0), key=b"k", partition=0)
            await agent.put(raw_with_note("acme", 1, 4000), key=b"k", partition=0)
            await agent.put(raw("acme", 2), key=b"k", partition=0)
        signed = signed_records(recorder, decoder)
        assert [(r["event_id"], r["seq"]) for r in signed] == [("acme-0", 1), ("acme-2", 2)]
        assert walk_chain(signed[0]["chain_id"], signed, KEYS, anchor=ChainHead()).ok
        dead = [(v, h) for t, v, _, h in recorder.sent if t == "events.raw.dlq"]
        assert len(dead) == 1
        value, headers = dead[0]
        assert value == raw_with_note("acme", 1, 4000)  # the original bytes, for a replay
        assert headers["dlq.reason"] == b"signed_record_too_large"
        assert headers["dlq.stage"] == b"sign" and headers["dlq.offset"] == b"1"
        assert b"6000" in headers["dlq.message"]


def checkpoints_of(recorder: Recorder, decoder: Decoder) -> list[tuple[str, int]]:
    records = [decoder.decode(v)[1] for t, v, _, _ in recorder.sent if t == "audit.checkpoints"]
    return [(c["chain_id"], c["seq"]) for c in records]


async def test_a_quiet_chain_gets_its_newest_entries_checkpointed(tmp_path: Path) -> None:
    """Checkpoints every N entries left a quiet chain's newest entries unanchored for good:
    deleted from both stores, nothing would tell. Now within the interval, even when idle."""
    for app, recorder, decoder in make_harness(
        tmp_path, checkpoint_every=1000, checkpoint_interval_s=0.05
    ):
        checkpoints = functools.partial(checkpoints_of, recorder, decoder)
        async with app.sign_events.test_context() as agent:
            for i in range(2):
                await agent.put(raw("acme", i), key=b"k", partition=0)
            await agent.put(raw("acme", 9), key=b"k", partition=1)
            assert checkpoints() == []  # the interval has not passed yet at the first entry
            await app.anchor_quiet_chains()
            assert checkpoints() == []
            time.sleep(0.06)  # the interval itself is the fault here: the chains went quiet
            await app.anchor_quiet_chains()
            assert sorted(checkpoints()) == [("events.raw/0", 2), ("events.raw/1", 1)]
            await app.anchor_quiet_chains()  # nothing new: no second checkpoint
            assert len(checkpoints()) == 2
            await agent.put(raw("acme", 2), key=b"k", partition=0)  # unanchored from now
            time.sleep(0.06)
            await agent.put(raw("acme", 3), key=b"k", partition=0)  # busy chain: at once
            assert checkpoints()[-1] == ("events.raw/0", 4)


def test_output_always_goes_through_the_input_partitions_transactional_producer() -> None:
    """The id once came from faust's view of the assignment; for a partition revoked while
    its buffered events were processed that view was empty and the record went out on the
    non-transactional producer, committed outside any transaction (a SIGKILL test saw two
    committed records at one chain position). The id is now formed as faust forms it."""
    from types import SimpleNamespace

    def revoked_view(tps: Any) -> set[str]:
        return set()  # what faust's assignment-based lookup answered for a revoked partition

    app = SimpleNamespace(
        in_transaction=True,
        conf=SimpleNamespace(id="sealstream-processor"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0),
        consumer=SimpleNamespace(
            transactions=SimpleNamespace(_tps_to_transactional_ids=revoked_view)
        ),
    )
    outputs = Outputs(app, WorkerSettings(), None)  # type: ignore[arg-type]
    source = Source("events.raw", 4, 600, {})
    assert outputs._transactional_id(source) == "sealstream-processor-0-4"
    app.in_transaction = False  # at least once: the plain producer
    assert outputs._transactional_id(source) is None


async def test_buffered_events_of_a_revoked_partition_are_left_to_its_next_owner(
    harness: Any,
) -> None:
    from faust.types import TP

    app, recorder, decoder = harness
    async with app.sign_events.test_context() as agent:
        await agent.put(raw("acme", 0), key=b"k", partition=0)
        await app.on_partitions_revoked.send(revoked={TP("events.raw", 0)})
        await agent.put(raw("acme", 1), key=b"k", partition=0)  # still in the stream's buffer
        await agent.put(raw("acme", 7), key=b"k", partition=1)  # a partition still ours
        await app.on_partitions_assigned.send(assigned={TP("events.raw", 0)})
        await agent.put(raw("acme", 2), key=b"k", partition=0)  # ours again
    signed = signed_records(recorder, decoder)
    assert [(r["event_id"], r["source_partition"]) for r in signed] == [
        ("acme-0", 0), ("acme-7", 1), ("acme-2", 0),
    ]  # fmt: skip


async def test_a_partition_kept_across_a_rebalance_keeps_its_chain_and_open_transaction(
    harness: Any,
) -> None:
    """A rebalance revokes every partition, then assigns some back. faust keeps a kept
    partition's producer and its open transaction, so what was signed before is still to be
    committed: re-reading the committed output (which does not have it yet) signed it again
    in the same transaction (the zombie-worker fault case stored 30 events twice)."""
    from faust.types import TP

    app, recorder, decoder = harness
    raw0, raw1 = TP("events.raw", 0), TP("events.raw", 1)
    async with app.sign_events.test_context() as agent:
        await app.on_partitions_assigned.send(assigned={raw0, raw1})
        for i in range(2):
            await agent.put(raw("acme", i), key=b"k", partition=0)
        await agent.put(raw("acme", 9), key=b"k", partition=1)
        # the committed output still has nothing of partition 0: its transaction is open
        await app.on_partitions_revoked.send(revoked={raw0, raw1})
        await app.on_partitions_assigned.send(assigned={raw0})  # 0 kept, 1 went elsewhere
        await agent.put(raw("acme", 2), key=b"k", partition=0)
    signed = [r for r in signed_records(recorder, decoder) if r["source_partition"] == 0]
    assert [(r["event_id"], r["seq"]) for r in signed] == [
        ("acme-0", 1), ("acme-1", 2), ("acme-2", 3),
    ]  # fmt: skip
    assert walk_chain(signed[0]["chain_id"], signed, KEYS, anchor=ChainHead()).ok
    # the first assignment gained both, the second lost 1: their stale transactions aborted,
    # partition 0's (kept) left alone
    assert recorder.restarted == [(0, True), (1, True), (1, False)]


async def test_a_transaction_left_open_by_an_earlier_ownership_is_aborted() -> None:
    from types import SimpleNamespace

    calls: list[tuple[str, str]] = []

    class Producer:
        def __init__(self, open_tids: set[str]) -> None:
            self._transaction_producers = {
                tid: SimpleNamespace(
                    _txn_manager=SimpleNamespace(is_in_transaction=lambda t=tid: t in open_tids)
                )
                for tid in ("p-0-3", "p-0-4")
            }

        async def abort_transaction(self, tid: str) -> None:
            calls.append(("abort", tid))

        async def maybe_begin_transaction(self, tid: str) -> None:
            calls.append(("begin", tid))

    app = SimpleNamespace(
        in_transaction=True,
        conf=SimpleNamespace(id="p"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0),
        producer=Producer({"p-0-3"}),
    )
    outputs = Outputs(app, WorkerSettings(), None)  # type: ignore[arg-type]
    assert await outputs.restart_transaction(3, begin=True) is True
    assert await outputs.restart_transaction(4, begin=True) is False  # nothing open
    assert await outputs.restart_transaction(5, begin=False) is False  # no producer at all
    assert calls == [("abort", "p-0-3"), ("begin", "p-0-3")]


async def test_signed_records_carry_the_workers_span_under_each_events_trace(
    harness: Any,
) -> None:
    """Read with the SDK's in-memory exporter: one span per input record and trace, the child
    of the trace context its events came with; each signed record carries its span's context
    and a dead letter the event's own (a replay goes on in the gateway's trace)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from schemas.frames import FramedEvent, encode_frame
    from sealstream.tracing import Tracing, ids_of

    app, recorder, decoder = harness
    exporter = InMemorySpanExporter()
    app.signer.tracing = Tracing("worker", exporter)
    one = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    two = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    framed = [
        FramedEvent(b"k", {"traceparent": one, "tracestate": b"v=1"}, raw("acme", 0)),
        FramedEvent(b"k", {"traceparent": two}, raw("acme", 1)),
        FramedEvent(b"k", {"traceparent": one, "tracestate": b"v=1"}, raw("acme", 2)),
        FramedEvent(b"k", {"traceparent": one, "tracestate": b"v=1"}, b"\x00poison"),
        FramedEvent(b"k", {}, raw("acme", 3)),  # no trace context: a trace of its own
    ]
    async with app.sign_events.test_context() as agent:
        await agent.put(encode_frame(framed), key=b"k", partition=0)
    app.signer.tracing.flush()
    spans = {f"{s.context.trace_id:032x}": s for s in exporter.get_finished_spans()}
    assert len(spans) == 3
    first, second = (
        spans["4bf92f3577b34da6a3ce929d0e0e4736"],
        spans["0af7651916cd43dd8448eb211c80319c"],
    )
    assert first.parent is not None and f"{first.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert second.parent is not None and f"{second.parent.span_id:016x}" == "b7ad6b7169203331"
    (own,) = [s for s in spans.values() if s not in (first, second)]
    assert own.parent is None
    assert [s.attributes["sealstream.events"] for s in (first, second, own)] == [2, 1, 1]
    assert first.context.trace_state.get("v") == "1"

    def ids(span: Any) -> tuple[str, str]:
        return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"

    signed = [(decoder.decode(v)[1], h) for t, v, _, h in recorder.sent if t == "events.signed"]
    assert [(r["event_id"], ids_of(h["traceparent"])) for r, h in signed] == [
        ("acme-0", ids(first)), ("acme-1", ids(second)), ("acme-2", ids(first)),
        ("acme-3", ids(own)),
    ]  # fmt: skip
    (dead,) = [h for t, _, _, h in recorder.sent if t == "events.raw.dlq"]
    assert (dead["traceparent"], dead["tracestate"]) == (one, b"v=1")
