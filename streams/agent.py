"""The signing agent: each input partition of ``events.raw`` is one hash chain, signed in order
into the same partition of ``events.signed``.

As faust's own agents do, :class:`Signer` keeps its state in attributes: a
:class:`PartitionState` per input partition (reconciled with the committed output at the
partition's first event, forgotten when the partition is lost or gained) and the partitions
this worker owns or has just lost. ``streams/app.py`` registers its methods as the faust agent,
the quiet-chain timer and the rebalance signal handlers; it writes through
``streams/outputs.py``. Why each step is there: docs/streams.md, "Delivery".
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

from schemas.frames import FrameError, decode_frame, is_frame
from sealstream.integrity import ChainHead
from sealstream.keys import HmacKeyring
from sealstream.logs import bind, bound
from sealstream.settings import KafkaSettings, WorkerSettings
from sealstream.tracing import Hops, Tracing
from streams.dedup import SeenWindow, dedup_key
from streams.enrich import EnrichmentFailed
from streams.heads import WHOLE, done_through, of_chain, resume_head
from streams.metrics import (
    CHECKPOINTS,
    DEAD,
    DUPLICATES,
    FOREIGN,
    GAP_FILLED,
    PROCESSED,
    REPLAYED,
    RETRIES,
    STALE,
    STALE_TRANSACTIONS,
)
from streams.outputs import Outputs
from streams.processor import (
    PoisonMessage,
    Processor,
    Signed,
    Source,
    checkpoint,
    cloudevent_headers,
    dead_letter_headers,
)

log = logging.getLogger("sealstream.worker")
# the event's headers its log lines carry (sealstream/logs.py)
IDS = ("correlation_id", "tenant", "event_id")

# what a record costs beyond its value, key and headers in a Kafka record batch, generously
RECORD_OVERHEAD = 512


class SignedRecordTooLarge(ValueError):
    """The signed record of an event exceeds what events.signed takes: dead-lettered."""


@dataclass
class Anchor:
    """How far a chain is anchored by signed checkpoints: ``since`` is the monotonic time of
    the first entry after the last checkpoint (None when the head is checkpointed)."""

    since: float | None = None


@dataclass
class PartitionState:
    """What the agent knows of one input partition it owns; None until known.

    The rebalance signals run while the agent awaits and may forget a partition's state, so
    the agent looks it up again after every await instead of holding on to it: what it
    writes then lands in the state the partition has at that moment.
    """

    # reconciled with the committed output since it was (re)assigned
    reconciled: bool = False
    # the offset to process next. Set from Kafka when a partition is (re)assigned, then
    # advanced by each event; an event past it means the consumer skipped some (seen after
    # worker restarts): those are read back and processed first, in order.
    next_offset: int | None = None
    # the offset faust's consumer should deliver next, in faust's own bookkeeping (its
    # committed offset at assignment, then the last delivered + 1). Every offset it skips,
    # processed here or already done, must be handed back to it, or it never commits the
    # partition again.
    faust_next: int | None = None
    # the events its chain signed recently (streams/dedup.py)
    seen: SeenWindow | None = None
    # since when its newest entries wait for a signed checkpoint
    anchor: Anchor | None = None
    # its chain's head: [seq, head hash, last source offset done, index done in it]. Kept
    # here and written to the chain-heads table only with each checkpoint: a table write is a
    # changelog record per event, and the table is a hint anyway (reconcile takes the
    # committed output). The index is the last event done of a frame; WHOLE when the record
    # at that offset is done whole.
    head: list[Any] | None = None


class Signer:
    """The agent of ``events.raw``: signs each partition's events into its chain, skips
    redeliveries, drops duplicates, fills input gaps, dead-letters what cannot be signed and
    anchors the chains with signed checkpoints."""

    def __init__(
        self,
        settings: WorkerSettings,
        kafka: KafkaSettings,
        processor: Processor,
        keys: HmacKeyring,
        outputs: Outputs,
        heads: Any,
        signed_limit: int,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.processor = processor
        self.keys = keys
        self.outputs = outputs
        # the chain-heads table: partition -> [seq, head hash, last source offset], as of the
        # chain's last checkpoint (the working head is PartitionState.head)
        self.heads = heads
        self.signed_limit = signed_limit
        self.partitions: dict[int, PartitionState] = {}
        # input partitions revoked from this worker and not assigned again: their events still
        # buffered in the stream are the next owner's to process, not ours
        self.lost: set[int] = set()
        # input partitions of this worker's last assignment
        self.owned: set[int] = set()
        # the spans of the record being handled, one per trace (sealstream/tracing.py)
        self.tracing = tracing or Tracing("worker")
        self.hops = Hops(self.tracing, "sign events", {})

    def _state(self, partition: int) -> PartitionState:
        return self.partitions.setdefault(partition, PartitionState())

    def _forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def _inputs(self, tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.settings.raw_topic}

    async def on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        # A rebalance revokes every partition first (eager); which ones come back is known
        # only at the assignment. Until then nothing of them is processed.
        self.lost.update(self._inputs(revoked))

    async def on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Forget the partitions this worker lost or just gained; keep the state of those it
        kept. faust keeps a kept partition's transactional producer and its open transaction
        (it neither commits nor aborts it at a rebalance), so the output signed before the
        rebalance is still to be committed with what comes after: reconciling such a
        partition from the *committed* output signed that output a second time in the same
        transaction (the zombie-worker fault case: 30 events twice). A partition lost or
        gained has any transaction of an earlier ownership aborted before it is reconciled."""
        now = self._inputs(assigned)
        gone, gained = self.owned - now, now - self.owned
        for partition in sorted(gone | gained):
            if await self.outputs.restart_transaction(partition, begin=partition in gained):
                STALE_TRANSACTIONS.inc()
                log.warning("aborted a transaction left open on events.raw[%s]", partition)
        self._forget(gone | gained)
        self.owned.clear()
        self.owned.update(now)
        self.lost.difference_update(now)

    async def reconcile(self, partition: int) -> None:
        """The committed output is the truth; the recovered table may lag it or, after an
        aborted transaction, run ahead of it (which would skip events). Use the output, and
        resume the input where the group's committed offset says."""
        settings, outputs = self.settings, self.outputs
        key = str(partition)
        stored = self.heads.get(key)
        tail = await outputs.committed_tail(
            self.kafka,
            partition,
            self.processor.output_decoder,
            of_chain(f"{settings.raw_topic}/{partition}", self.keys),
        )
        if tail.foreign:
            FOREIGN.inc(len(tail.foreign))
            log.warning(
                "%s record(s) on %s[%s] are not of chain %s/%s or not signed with this worker's "
                "keys (offsets %s...): ignored as chain head and dedup entries",
                len(tail.foreign), settings.signed_topic, partition, settings.raw_topic,
                partition, tail.foreign[:5],
            )  # fmt: skip
        committed = tail.head
        window = SeenWindow(settings.dedup_max_per_partition, int(settings.dedup_window_s * 1000))
        for event_key, at_ms in tail.recent:
            window.add(event_key, at_ms)
        self._state(partition).seen = window
        dead = await outputs.dead_letter_position(self.kafka, partition)
        fresh = resume_head(committed, dead)
        if (fresh or None) != (stored or None):
            log.info(
                "chain head table differs from committed output (it is written with each "
                "checkpoint) partition=%s table=%s committed=%s",
                partition,
                stored[:1] + stored[2:] if stored else None,
                fresh[:1] + fresh[2:] if fresh else None,
            )
            self.heads[key] = fresh
        self._state(partition).head = fresh
        # the committed tail may have died unanchored with the previous owner: anchor it soon
        self._state(partition).anchor = Anchor(time.monotonic() if committed is not None else None)
        resume = await outputs.resume_offset(self.kafka, partition)
        if resume is not None:
            # the output can be ahead of the committed input offset: faust acks an event only
            # when the next one is taken, so a transaction may hold its output but not its ack
            # a frame's event: the rest of that frame may still be to do (its done ones are
            # skipped by the head's index)
            done = done_through(fresh)
            after = resume if done is None else done[0] + (1 if done[1] == WHOLE else 0)
            self._state(partition).next_offset = max(resume, after)
        start = outputs.consumer_committed(partition)
        start = resume if start is None else start
        if start is not None:
            self._state(partition).faust_next = start
        log.info(
            "chain %s/%s: head %s, input resumes at offset %s, %s event id(s) in the dedup window",
            settings.raw_topic,
            partition,
            fresh[:1] + fresh[2:] if fresh else None,
            self._state(partition).next_offset,
            len(window),
        )

    async def sign_events(self, stream: Any) -> None:
        """The agent: every event of the stream, in order per partition."""
        async for event in stream.events():
            message = event.message
            partition = message.partition
            if partition in self.lost:
                # revoked while buffered: the next owner resumes from the committed offsets
                STALE.inc()
                continue
            if not self._state(partition).reconciled:
                await self.reconcile(partition)
                self._state(partition).reconciled = True
            state = self._state(partition)
            expected = state.next_offset
            skipped_from = message.offset if state.faust_next is None else state.faust_next
            state.faust_next = message.offset + 1
            if expected is not None and message.offset > expected:
                await self._fill_gap(message.topic, partition, expected, message.offset)
            if message.offset > skipped_from:
                # never delivered by faust: processed just now, or done before (committed
                # output ahead of the committed input offset)
                await self.outputs.mark_done(partition, skipped_from, message.offset)
            if expected is not None and message.offset < expected:
                REPLAYED.inc()  # redelivered: already part of a committed transaction
                continue
            await self.handle_record(
                message.topic, partition, message.offset, message.key, event.value, message.headers
            )
            self._state(partition).next_offset = message.offset + 1

    async def _fill_gap(self, topic: str, partition: int, expected: int, offset: int) -> None:
        """Read back and process, in order, the input records ``[expected, offset)`` the
        consumer skipped over."""
        gap = await self.outputs.read_range(self.kafka, partition, expected, offset)
        log.warning(
            "input gap on %s[%s]: consumer delivered offset %s, expected %s; "
            "processing the %s skipped record(s) first",
            topic,
            partition,
            offset,
            expected,
            len(gap),
        )
        for record in gap:
            GAP_FILLED.inc()
            await self.handle_record(
                record.topic, partition, record.offset, record.key, record.value, record.headers
            )

    async def handle_record(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        raw_headers: Any,
    ) -> None:
        """One input record: a plain event, or a frame whose events are handled in order (a
        frame that does not decode is dead-lettered whole, as any undecodable record is).

        A record is handled whole, a frame included: faust sends the revocation signal only
        after every message that started processing is acked (``stream_wait_empty``, on by
        default and checked by tests/unit/test_streams_frames.py), and a message is acked when
        the agent takes the next one, so a rebalance never lands inside a frame. A worker
        killed inside one resumes after its last committed event (``reconcile``)."""
        headers = {k: (v or b"") for k, v in (raw_headers or [])}
        attributes = {"messaging.destination.name": topic, "messaging.kafka.offset": offset}
        self.hops = Hops(self.tracing, "sign events", attributes)
        # the record's log context; each event binds its own ids (handle)
        with bound(partition=partition, offset=offset), self.hops:
            if not is_frame(value):
                await self.handle(Source(topic, partition, offset, headers), key, value)
                return
            assert value is not None
            try:
                events = decode_frame(value)
            except FrameError as exc:
                await self._dead_whole(Source(topic, partition, offset, headers), key, value, exc)
                return
            for index, framed in enumerate(events):
                source = Source(topic, partition, offset, framed.headers, index)
                await self.handle(source, framed.key, framed.value)

    async def _dead_whole(
        self, source: Source, key: bytes | None, value: bytes, exc: FrameError
    ) -> None:
        done = done_through(self._state(source.partition).head)
        if done is not None and (source.offset, WHOLE) <= done:
            REPLAYED.inc()
            return
        await self._dead(value, key, source, exc, "undecodable_frame", "decode", 1, 0.0)
        self._mark_done(source, WHOLE)

    def _mark_done(self, source: Source, index: int, head: ChainHead | None = None) -> None:
        """The chain head, moved on to ``head`` (or as it is) with this input event done."""
        if head is None:
            stored = self._state(source.partition).head
            head = ChainHead(stored[0], stored[1]) if stored else ChainHead()
        self._state(source.partition).head = [head.seq, head.hash, source.offset, index]

    async def handle(self, source: Source, key: bytes | None, value: bytes | None) -> None:
        """Sign one input event into its partition's chain, or skip, drop or dead-letter it;
        either way the chain head records it as done."""
        partition, offset = source.partition, source.offset
        index = WHOLE if source.index is None else source.index
        bind(**{name: source.headers.get(name, b"").decode(errors="replace") for name in IDS})
        stored = self._state(partition).head
        head = ChainHead(stored[0], stored[1]) if stored else ChainHead()
        done = done_through(stored)
        if done is not None and (offset, index) <= done:
            # faust redelivers the last message after a rebalance or restart; the chain
            # head (same transaction as the output) says it is done: skip, don't re-sign.
            REPLAYED.inc()
            return
        signed = await self.process_with_retries(value, source, head, key)
        if signed is None:  # dead-lettered: the chain is unchanged, the event is done
            self._mark_done(source, index, head)
            return
        tenant, event_id = str(signed.record["tenant"]), str(signed.record["event_id"])
        window = self._state(partition).seen
        event_key, now_ms = dedup_key(tenant, event_id), int(time.time() * 1000)
        if window is not None and window.seen(event_key, now_ms):
            # the same event produced twice (a retry the gateway could not recognize): the
            # chain stays as it is, the offset is done
            DUPLICATES.labels(tenant).inc()
            log.info(
                "duplicate event dropped tenant=%s event_id=%s topic=%s partition=%s offset=%s "
                "index=%s",
                tenant,
                event_id,
                source.topic,
                partition,
                offset,
                source.index,
            )
            self._mark_done(source, index, head)
            return
        if not await self._send_signed(source, signed, key, value, tenant, event_id):
            self._mark_done(source, index, head)
            return
        self._mark_done(source, index, signed.head)
        if window is not None:
            window.add(event_key, now_ms)
        PROCESSED.labels(signed.record["tenant"], signed.record["event_type"]).inc()
        await self._anchor_new_entry(source, signed.head)

    async def _send_signed(
        self,
        source: Source,
        signed: Signed,
        key: bytes | None,
        value: bytes | None,
        tenant: str,
        event_id: str,
    ) -> bool:
        """Write the signed record to events.signed; False if it was too large and went to the
        dead letters instead."""
        settings = self.settings
        out_headers = [
            ("correlation_id", source.headers.get("correlation_id", b"")),
            # the dedup window is rebuilt from these after a restart (streams/heads.py)
            ("tenant", tenant.encode()),
            ("event_id", event_id.encode()),
            *cloudevent_headers(signed.record),  # CloudEvents' Kafka binding
            *self.hops.hop(source.headers),  # the trace context: this worker's span
        ]
        if source.index is not None:
            # where reconcile resumes inside the frame (streams/heads.py)
            out_headers.append(("source_index", str(source.index).encode()))
        size = len(signed.value) + len(key or b"") + RECORD_OVERHEAD
        size += sum(len(k) + len(v) for k, v in out_headers)
        try:
            if size > self.signed_limit:
                raise SignedRecordTooLarge(
                    f"the signed record is {size} bytes; {settings.signed_topic} takes "
                    f"{self.signed_limit}"
                )
            await self.outputs.send(
                source, settings.signed_topic, signed.value, key, source.partition, out_headers
            )
        except (SignedRecordTooLarge, MessageSizeTooLargeError) as exc:
            # never skipped: the event goes to the dead letters with its reason, the chain
            # stays as it is (nothing was written), the offset is done
            now = time.time()
            await self.dead_letter(
                value, key, source, exc, "signed_record_too_large", "sign", 1, now, now
            )
            return False
        return True

    async def _anchor_new_entry(self, source: Source, head: ChainHead) -> None:
        """Checkpoint the chain every ``checkpoint_every`` entries, or once the oldest
        unanchored entry is ``checkpoint_interval_s`` old."""
        settings, state = self.settings, self._state(source.partition)
        if state.anchor is None:
            state.anchor = Anchor()
        anchor = state.anchor
        if anchor.since is None:
            anchor.since = time.monotonic()
        if head.seq % settings.checkpoint_every == 0:
            await self.anchor(source, head, anchor, "count")
        elif time.monotonic() - anchor.since >= settings.checkpoint_interval_s:
            await self.anchor(source, head, anchor, "time")
        else:
            return
        # the table, as of this checkpoint (written here, in the event's context: faust's
        # table writes belong to the event being processed, not to a timer)
        now = self.partitions.get(source.partition)
        if now is not None and now.head is not None:
            self.heads[str(source.partition)] = list(now.head)

    async def anchor(self, source: Source, head: ChainHead, anchor: Anchor, reason: str) -> None:
        """Write a signed checkpoint of ``head`` and mark the chain anchored up to it."""
        await self.emit_checkpoint(source, head)
        CHECKPOINTS.labels(reason).inc()
        state = self.partitions.get(source.partition)
        now = state.head if state is not None else None
        # signed on while the checkpoint was written (the quiet-chain timer): still unanchored
        anchor.since = None if not now or int(now[0]) == head.seq else time.monotonic()

    async def anchor_quiet_chains(self) -> None:
        """A chain that went quiet still gets its newest entries checkpointed within the
        interval: without it, the tail after the last checkpoint could be deleted from both
        stores unseen, for as long as the chain stays quiet."""
        settings = self.settings
        now = time.monotonic()
        anchors = [(p, s.anchor) for p, s in self.partitions.items() if s.anchor is not None]
        for partition, anchor in anchors:
            if anchor.since is None or now - anchor.since < settings.checkpoint_interval_s:
                continue
            state = self.partitions.get(partition)
            stored = state.head if state is not None else None
            if not stored or state is None or not state.reconciled:
                continue
            source = Source(settings.raw_topic, partition, int(stored[2]), {})
            try:
                await self.anchor(source, ChainHead(stored[0], stored[1]), anchor, "quiet")
            except Exception as exc:  # revoked meanwhile: its next owner anchors it
                log.warning("checkpoint of quiet chain %s not written: %s", source.chain_id, exc)

    async def emit_checkpoint(self, source: Source, head: ChainHead) -> None:
        record = checkpoint(source.chain_id, head, self.keys)
        value = self.outputs.checkpoint_encoder.encode(record)
        await self.outputs.send(
            source, self.outputs.settings.checkpoints_topic, value, source.chain_id.encode(), 0, []
        )

    async def process_with_retries(
        self, value: bytes | None, source: Source, head: ChainHead, key: bytes | None
    ) -> Signed | None:
        """The signed event, or None once it went to the dead letters: poison at once,
        transient enrichment failures after ``max_attempts`` with backoff, anything else
        (a bug must not skip the event) at once."""
        settings = self.settings
        first_failure = 0.0
        for attempt in range(1, settings.max_attempts + 1):
            try:
                return await self.processor.process(value, source, head)
            except PoisonMessage as exc:
                await self._dead(
                    value, key, source, exc, exc.reason, "decode", attempt, first_failure
                )
                return None
            except asyncio.CancelledError:
                raise
            except EnrichmentFailed as exc:
                first_failure = first_failure or time.time()
                if attempt == settings.max_attempts:
                    await self._dead(
                        value, key, source, exc, exc.reason, "enrich", attempt, first_failure
                    )
                    return None
                RETRIES.labels(exc.reason).inc()
                cap = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(cap / 2, cap))  # exponential, with jitter
            except Exception as exc:  # a bug must not skip the event: it goes to the DLQ instead
                log.exception("unexpected processing error")
                await self._dead(
                    value, key, source, exc, "unexpected_error", "process", attempt, first_failure
                )
                return None
        return None

    async def _dead(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        exc: BaseException,
        reason: str,
        stage: str,
        attempt: int,
        first_failure: float,
    ) -> None:
        """Dead-letter after ``attempt`` attempts, the first failed at ``first_failure`` (0:
        this one)."""
        now = time.time()
        await self.dead_letter(
            value, key, source, exc, reason, stage, attempt, first_failure or now, now
        )

    async def dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        error: BaseException,
        reason: str,
        stage: str,
        attempts: int,
        first: float,
        last: float,
    ) -> None:
        """Send the original record to the dead-letter topic with its error headers."""
        DEAD.labels(
            source.headers.get("tenant", b"").decode("utf-8", "replace"),
            source.headers.get("event_type", b"").decode("utf-8", "replace"),
            reason,
            stage,
        ).inc()
        log.warning(
            "dead_letter reason=%s stage=%s topic=%s partition=%s offset=%s error=%s",
            reason,
            stage,
            source.topic,
            source.partition,
            source.offset,
            error,
        )
        headers = dead_letter_headers(
            source,
            error=error,
            reason=reason,
            stage=stage,
            attempts=attempts,
            first_failure=first,
            last_failure=last,
        )
        partitions = self.outputs.settings.dlq_partitions
        await self.outputs.send(
            source,
            self.outputs.settings.dlq_topic,
            value or b"",
            key,
            source.partition % partitions,
            headers,
        )
