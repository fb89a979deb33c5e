"""The faust app: consumes ``events.raw``, writes ``events.signed``, ``events.raw.dlq`` and
``audit.checkpoints``.

Delivery: ``processing_guarantee="exactly_once"``. Each input partition is one hash chain
(``events.raw/<p>``); its head lives in the changelog-backed table ``chain-heads`` under the key
``<p>`` as ``[seq, head hash, last source offset]``, and the signed event goes to the same
partition number of ``events.signed``. faust redelivers the last message of a partition after
a rebalance or restart; the stored source offset makes the agent skip it (idempotence). With
exactly-once, the output records, the table's changelog update and the input offset commit
are one Kafka transaction per partition, so a crash or rebalance resumes from the last
committed head: no gap, no fork, no duplicate (read with ``isolation.level=read_committed``).
An event the gateway produced twice (a retry it could not recognize) is dropped by its
``(tenant, event_id)`` (``streams/dedup.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import yaml
from aiokafka.errors import MessageSizeTooLargeError
from faust.types import TP
from prometheus_client import Counter

from schemas.catalog import Catalog, subject_for
from schemas.serde import Decoder, Encoder, registry_lookup
from sealstream.integrity import ChainHead
from sealstream.keys import HmacKeyring
from sealstream.settings import KafkaSettings, RegistrySettings, WorkerSettings
from sealstream.topics import PRODUCER_MAX_REQUEST_BYTES
from streams.dedup import SeenWindow, dedup_key
from streams.enrich import (
    ClientAttributes,
    EnrichmentFailed,
    PiiClassification,
    Pipeline,
    SlowTenant,
    TenantDirectory,
    TimeFields,
)
from streams.heads import CommittedTail, RawRecord, committed_tail, read_range, resume_offset
from streams.mask import Masker
from streams.processor import PoisonMessage, Processor, Source, checkpoint, dead_letter_headers
from streams.route import RoutingTable

log = logging.getLogger("sealstream.worker")

PROCESSED = Counter(
    "sealstream_worker_events_signed_total", "Events signed", ["tenant", "event_type"]
)
DEAD = Counter(  # tenant and event_type from the gateway's headers ('' for poison)
    "sealstream_worker_dead_letters_total",
    "Events dead-lettered",
    ["tenant", "event_type", "reason", "stage"],
)
REPLAYED = Counter(
    "sealstream_worker_redelivered_skipped_total", "Redelivered events already signed (skipped)"
)
RETRIES = Counter("sealstream_worker_retries_total", "Transient failures retried", ["reason"])
DUPLICATES = Counter(
    "sealstream_worker_duplicates_dropped_total",
    "Events whose (tenant, event_id) the chain had already signed (a retried request the "
    "gateway produced twice): dropped, not signed again",
    ["tenant"],
)
CHECKPOINTS = Counter(
    "sealstream_worker_checkpoints_total",
    "Signed checkpoints of a chain's head, by what triggered them",
    ["reason"],
)
# what a record costs beyond its value, key and headers in a Kafka record batch, generously
RECORD_OVERHEAD = 512


class SignedRecordTooLarge(ValueError):
    """The signed record of an event exceeds what events.signed takes: dead-lettered."""


@dataclass
class Anchor:
    """How far a chain is anchored by signed checkpoints: ``since`` is the monotonic time of
    the first entry after the last checkpoint (None when the head is checkpointed)."""

    since: float | None = None


STALE = Counter(
    "sealstream_worker_revoked_events_skipped_total",
    "Buffered events of partitions revoked from this worker: left to their next owner",
)
STALE_TRANSACTIONS = Counter(
    "sealstream_worker_stale_transactions_aborted_total",
    "Transactions of an earlier ownership of a partition aborted at a rebalance",
)
GAP_FILLED = Counter(
    "sealstream_worker_gap_filled_total",
    "Input events the consumer skipped over and the agent read back and processed in order",
)


@dataclass
class Outputs:
    """Where the agent writes, and how.

    Every record goes through the transactional producer of the *input* partition being
    processed. faust's ``Topic.send`` cannot be used for this: it resolves the destination
    partition from the consumer's metadata, which lacks topics the worker does not consume, and
    then falls back to key hashing on the non-transactional producer, so output would land on
    other partitions and outside the transaction (seen in the chain tests).
    """

    app: Any
    settings: WorkerSettings
    checkpoint_encoder: Encoder

    def _transactional_id(self, source: Source) -> str | None:
        """The transactional id of the input partition, as faust's TransactionManager forms it
        (``{app id}-{topic group}-{partition}``), whether or not faust still counts the
        partition as assigned.

        It once came from faust's view of the assignment, and for a partition revoked while its
        buffered events were still being processed that view was empty: the record then went
        out on the *non-transactional* producer, committed at once, outside any transaction,
        while the partition's next owner signed the same input again (two committed records at
        one chain position: the SIGKILL test's seqs 601 and 901). Now such a send finds no
        producer for the id and fails instead (ProducerSendError), and a fenced zombie's fails
        with ProducerFenced: nothing leaves a worker outside its partition's transaction."""
        if not self.app.in_transaction:
            return None
        group = self.app.assignor.group_for_topic(source.topic)
        return f"{self.app.conf.id}-{group}-{source.partition}"

    async def restart_transaction(self, partition: int, begin: bool) -> bool:
        """Abort this process's open transaction of input ``partition``, if it has one, and
        (``begin``) start a fresh one. True if one was aborted.

        A transaction left open by an earlier ownership of the partition must never commit:
        faust does not always stop the producer of a partition it loses (seen in the
        zombie-worker case: lost at one rebalance, assigned back at the next, its producer
        still in the old transaction), and the chain is reconciled from the *committed*
        output, which does not hold what that transaction signed."""
        if not self.app.in_transaction:
            return False
        tid = self._transactional_id(Source(self.settings.raw_topic, partition, 0, {}))
        assert tid is not None
        producer = self.app.producer
        found = getattr(producer, "_transaction_producers", {}).get(tid)
        manager = getattr(found, "_txn_manager", None)
        if manager is None or not manager.is_in_transaction():
            return False
        await producer.abort_transaction(tid)
        if begin:
            await producer.maybe_begin_transaction(tid)
        return True

    async def committed_tail(
        self, kafka: KafkaSettings, partition: int, decoder: Decoder
    ) -> CommittedTail:
        """The last committed signed record of ``partition`` and the events signed within the
        deduplication window (see streams/heads.py, streams/dedup.py)."""
        return await asyncio.to_thread(
            committed_tail,
            kafka,
            self.settings.signed_topic,
            partition,
            decoder,
            int((time.time() - self.settings.dedup_window_s) * 1000),
            self.settings.dedup_max_per_partition,
        )

    async def resume_offset(self, kafka: KafkaSettings, partition: int) -> int | None:
        """The input offset the group must process next on ``partition`` (streams/heads.py)."""
        return await asyncio.to_thread(
            resume_offset, kafka, self.settings.app_id, self.settings.raw_topic, partition
        )

    def consumer_committed(self, partition: int) -> int | None:
        """faust's consumer's committed offset of an input partition (its private bookkeeping:
        the head of the acked set it will commit from; see ``mark_done``)."""
        tp = TP(self.settings.raw_topic, partition)
        value = self.app.consumer._committed_offset.get(tp)
        return None if value is None else int(value)

    async def mark_done(self, partition: int, start: int, end: int) -> None:
        """Tell faust's consumer that input offsets ``[start, end)`` need no ack of their own.

        The agent processed them from a gap faust's consumer skipped over; faust never
        delivered them, so they are not in its acked set, and with a hole at the head of that
        set faust never commits the partition again (``Consumer._new_offset``): its
        transaction stays open and every read_committed reader stalls (the "hanging
        transaction" the fault suite found). ``_add_gap`` is faust's own bookkeeping for offsets
        that carry no message (transaction markers); there is no public API for it.
        """
        tp = TP(self.settings.raw_topic, partition)
        await self.app.consumer._add_gap(tp, start, end - 1)

    async def read_range(
        self, kafka: KafkaSettings, partition: int, start: int, end: int
    ) -> list[RawRecord]:
        """The committed input records ``[start, end)`` of ``partition``."""
        return await asyncio.to_thread(
            read_range, kafka, self.settings.raw_topic, partition, start, end
        )

    async def send(
        self,
        source: Source,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int,
        headers: list[tuple[str, bytes]],
    ) -> None:
        await self.app.producer.send(
            topic,
            key,
            value,
            partition,
            None,
            headers,
            transactional_id=self._transactional_id(source),
        )


def _broker(kafka: KafkaSettings) -> str:
    return ";".join(f"kafka://{host}" for host in kafka.bootstrap_servers.split(","))


def create_app(
    settings: WorkerSettings,
    kafka: KafkaSettings,
    processor: Processor,
    keys: HmacKeyring,
    checkpoint_encoder: Encoder,
    outputs: Outputs | None = None,
    signed_limit: int = PRODUCER_MAX_REQUEST_BYTES,
) -> faust.App:
    """The worker's app. ``outputs`` replaces the Kafka writers (unit tests, test_context);
    ``signed_limit`` is the largest record events.signed takes (its max.message.bytes)."""
    app = faust.App(
        settings.app_id,
        broker=_broker(kafka),
        processing_guarantee=settings.processing_guarantee,
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=True,
        topic_disable_leader=True,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        datadir=str(settings.data_dir),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=2000,
        broker_commit_interval=settings.commit_interval_s,
        # After a worker is killed mid-transaction the aborted changelog write can leave the
        # in-memory "persisted offset" past the committed changelog end, and faust then
        # refuses to recover (ConsistencyError, seen in the kill tests). The table is a working
        # copy here: heads are reconciled with the committed output (streams/heads.py).
        recovery_consistency_check=False,
        # aiokafka has no static membership: a SIGKILLed worker's partitions wait for its
        # session to expire before anyone (its own restart included) gets them. faust's 60 s
        # default stalled every chain of the killed worker for a minute (fault suite).
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,
    )
    raw = app.topic(
        settings.raw_topic,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.partitions,
    )
    outputs = outputs or Outputs(app, settings, checkpoint_encoder)
    heads = app.Table("chain-heads", default=None, partitions=settings.partitions)

    reconciled: set[int] = set()
    # per input partition: the offset to process next. Set from Kafka when a partition is
    # (re)assigned, then advanced by each event; an event past it means the consumer skipped
    # some (seen after worker restarts): those are read back and processed first, in order.
    next_offset: dict[int, int] = {}
    # per input partition: the offset faust's consumer should deliver next, in faust's own
    # bookkeeping (its committed offset at assignment, then the last delivered + 1). Every
    # offset it skips, processed here or already done, must be handed back to it, or it
    # never commits the partition again.
    faust_next: dict[int, int] = {}
    # per input partition: the events its chain signed recently (streams/dedup.py)
    seen: dict[int, SeenWindow] = {}
    # per input partition: since when its newest entries wait for a signed checkpoint
    anchors: dict[int, Anchor] = {}

    # input partitions revoked from this worker and not assigned again: their events still
    # buffered in the stream are the next owner's to process, not ours
    lost: set[int] = set()
    # input partitions of this worker's last assignment
    owned: set[int] = set()

    def _forget(partitions: set[int]) -> None:
        for partition in partitions:
            reconciled.discard(partition)
            seen.pop(partition, None)
            next_offset.pop(partition, None)
            faust_next.pop(partition, None)
            anchors.pop(partition, None)

    def _inputs(tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == settings.raw_topic}

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # A rebalance revokes every partition first (eager); which ones come back is known
        # only at the assignment. Until then nothing of them is processed.
        lost.update(_inputs(revoked))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Forget the partitions this worker lost or just gained; keep the state of those it
        kept. faust keeps a kept partition's transactional producer and its open transaction
        (it neither commits nor aborts it at a rebalance), so the output signed before the
        rebalance is still to be committed with what comes after: reconciling such a
        partition from the *committed* output signed that output a second time in the same
        transaction (the zombie-worker fault case: 30 events twice). A partition lost or
        gained has any transaction of an earlier ownership aborted before it is reconciled."""
        now = _inputs(assigned)
        gone, gained = owned - now, now - owned
        for partition in sorted(gone | gained):
            if await outputs.restart_transaction(partition, begin=partition in gained):
                STALE_TRANSACTIONS.inc()
                log.warning("aborted a transaction left open on events.raw[%s]", partition)
        _forget(gone | gained)
        owned.clear()
        owned.update(now)
        lost.difference_update(now)

    async def _reconcile(partition: int) -> None:
        """The committed output is the truth; the recovered table may lag it or, after an
        aborted transaction, run ahead of it (which would skip events). Use the output, and
        resume the input where the group's committed offset says."""
        key = str(partition)
        stored = heads.get(key)
        tail = await outputs.committed_tail(kafka, partition, processor.output_decoder)
        committed = tail.head
        window = SeenWindow(settings.dedup_max_per_partition, int(settings.dedup_window_s * 1000))
        for event_key, at_ms in tail.recent:
            window.add(event_key, at_ms)
        seen[partition] = window
        fresh: list[Any] | None = (
            None
            if committed is None
            else [committed.head.seq, committed.head.hash, committed.source_offset]
        )
        if (fresh or None) != (stored or None):
            log.warning(
                "chain head differs from committed output partition=%s table=%s committed=%s",
                partition,
                stored[:1] + stored[2:] if stored else None,
                fresh[:1] + fresh[2:] if fresh else None,
            )
            heads[key] = fresh
        # the committed tail may have died unanchored with the previous owner: anchor it soon
        anchors[partition] = Anchor(time.monotonic() if committed is not None else None)
        resume = await outputs.resume_offset(kafka, partition)
        if resume is not None:
            # the output can be ahead of the committed input offset: faust acks an event only
            # when the next one is taken, so a transaction may hold its output but not its ack
            next_offset[partition] = max(resume, int(fresh[2]) + 1 if fresh else resume)
        start = outputs.consumer_committed(partition)
        start = resume if start is None else start
        if start is not None:
            faust_next[partition] = start
        log.info(
            "chain %s/%s: head %s, input resumes at offset %s, %s event id(s) in the dedup window",
            settings.raw_topic,
            partition,
            fresh[:1] + fresh[2:] if fresh else None,
            next_offset.get(partition),
            len(window),
        )

    async def _handle(
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        raw_headers: Any,
    ) -> None:
        headers = {k: (v or b"") for k, v in (raw_headers or [])}
        source = Source(topic, partition, offset, headers)
        chain_key = str(partition)
        stored = heads.get(chain_key)
        head = ChainHead(stored[0], stored[1]) if stored else ChainHead()
        if stored and len(stored) > 2 and offset <= stored[2]:
            # faust redelivers the last message after a rebalance or restart; the chain
            # head (same transaction as the output) says it is done: skip, don't re-sign.
            REPLAYED.inc()
            return
        signed = await _process_with_retries(processor, settings, value, source, head, outputs, key)
        if signed is None:  # dead-lettered: the chain is unchanged, the offset is done
            heads[chain_key] = [head.seq, head.hash, offset]
            return
        tenant, event_id = str(signed.record["tenant"]), str(signed.record["event_id"])
        window = seen.get(partition)
        event_key, now_ms = dedup_key(tenant, event_id), int(time.time() * 1000)
        if window is not None and window.seen(event_key, now_ms):
            # the same event produced twice (a retry the gateway could not recognize): the
            # chain stays as it is, the offset is done
            DUPLICATES.labels(tenant).inc()
            log.info(
                "duplicate event dropped tenant=%s event_id=%s topic=%s partition=%s offset=%s",
                tenant,
                event_id,
                topic,
                partition,
                offset,
            )
            heads[chain_key] = [head.seq, head.hash, offset]
            return
        out_headers = [
            ("correlation_id", headers.get("correlation_id", b"")),
            # the dedup window is rebuilt from these after a restart (streams/heads.py)
            ("tenant", tenant.encode()),
            ("event_id", event_id.encode()),
        ]
        size = len(signed.value) + len(key or b"") + RECORD_OVERHEAD
        size += sum(len(k) + len(v) for k, v in out_headers)
        try:
            if size > signed_limit:
                raise SignedRecordTooLarge(
                    f"the signed record is {size} bytes; {settings.signed_topic} takes "
                    f"{signed_limit}"
                )
            await outputs.send(
                source, settings.signed_topic, signed.value, key, partition, out_headers
            )
        except (SignedRecordTooLarge, MessageSizeTooLargeError) as exc:
            # never skipped: the event goes to the dead letters with its reason, the chain
            # stays as it is (nothing was written), the offset is done
            now = time.time()
            await _dead_letter(
                outputs, value, key, source, exc, "signed_record_too_large", "sign", 1, now, now
            )
            heads[chain_key] = [head.seq, head.hash, offset]
            return
        heads[chain_key] = [signed.head.seq, signed.head.hash, offset]
        if window is not None:
            window.add(event_key, now_ms)
        PROCESSED.labels(signed.record["tenant"], signed.record["event_type"]).inc()
        anchor = anchors.setdefault(partition, Anchor())
        if anchor.since is None:
            anchor.since = time.monotonic()
        if signed.head.seq % settings.checkpoint_every == 0:
            await _anchor(source, signed.head, anchor, "count")
        elif time.monotonic() - anchor.since >= settings.checkpoint_interval_s:
            await _anchor(source, signed.head, anchor, "time")

    async def _anchor(source: Source, head: ChainHead, anchor: Anchor, reason: str) -> None:
        await _emit_checkpoint(outputs, source, head, keys)
        CHECKPOINTS.labels(reason).inc()
        now = heads.get(str(source.partition))
        # signed on while the checkpoint was written (the quiet-chain timer): still unanchored
        anchor.since = None if not now or int(now[0]) == head.seq else time.monotonic()

    async def anchor_quiet_chains() -> None:
        """A chain that went quiet still gets its newest entries checkpointed within the
        interval: without it, the tail after the last checkpoint could be deleted from both
        stores unseen, for as long as the chain stays quiet."""
        now = time.monotonic()
        for partition, anchor in list(anchors.items()):
            stored = heads.get(str(partition))
            if anchor.since is None or now - anchor.since < settings.checkpoint_interval_s:
                continue
            if not stored or partition not in reconciled:
                continue
            source = Source(settings.raw_topic, partition, int(stored[2]), {})
            try:
                await _anchor(source, ChainHead(stored[0], stored[1]), anchor, "quiet")
            except Exception as exc:  # revoked meanwhile: its next owner anchors it
                log.warning("checkpoint of quiet chain %s not written: %s", source.chain_id, exc)

    # faust's timer wraps the function in its own loop; tests call the function itself
    app.timer(interval=max(0.1, settings.checkpoint_interval_s / 2))(anchor_quiet_chains)

    @app.agent(raw)
    async def sign_events(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            partition = message.partition
            if partition in lost:
                # revoked while buffered: the next owner resumes from the committed offsets
                STALE.inc()
                continue
            if partition not in reconciled:
                await _reconcile(partition)
                reconciled.add(partition)
            expected = next_offset.get(partition)
            skipped_from = faust_next.get(partition, message.offset)
            faust_next[partition] = message.offset + 1
            if expected is not None and message.offset > expected:
                gap = await outputs.read_range(kafka, partition, expected, message.offset)
                log.warning(
                    "input gap on %s[%s]: consumer delivered offset %s, expected %s; "
                    "processing the %s skipped record(s) first",
                    message.topic,
                    partition,
                    message.offset,
                    expected,
                    len(gap),
                )
                for record in gap:
                    GAP_FILLED.inc()
                    await _handle(
                        record.topic,
                        partition,
                        record.offset,
                        record.key,
                        record.value,
                        record.headers,
                    )
            if message.offset > skipped_from:
                # never delivered by faust: processed just now, or done before (committed
                # output ahead of the committed input offset)
                await outputs.mark_done(partition, skipped_from, message.offset)
            if expected is not None and message.offset < expected:
                REPLAYED.inc()  # redelivered: already part of a committed transaction
                continue
            await _handle(
                message.topic,
                partition,
                message.offset,
                message.key,
                event.value,
                message.headers,
            )
            next_offset[partition] = message.offset + 1

    app.sign_events = sign_events  # type: ignore[attr-defined]
    app.chain_heads = heads  # type: ignore[attr-defined]
    app.anchor_quiet_chains = anchor_quiet_chains  # type: ignore[attr-defined]
    return app


async def _emit_checkpoint(
    outputs: Outputs, source: Source, head: ChainHead, keys: HmacKeyring
) -> None:
    record = checkpoint(source.chain_id, head, keys)
    value = outputs.checkpoint_encoder.encode(record)
    await outputs.send(
        source, outputs.settings.checkpoints_topic, value, source.chain_id.encode(), 0, []
    )


async def _process_with_retries(
    processor: Processor,
    settings: WorkerSettings,
    value: bytes | None,
    source: Source,
    head: ChainHead,
    outputs: Outputs,
    key: bytes | None,
) -> Any:
    first_failure = 0.0

    async def dead(exc: BaseException, reason: str, stage: str, attempt: int) -> None:
        now = time.time()
        await _dead_letter(
            outputs, value, key, source, exc, reason, stage, attempt, first_failure or now, now
        )

    for attempt in range(1, settings.max_attempts + 1):
        try:
            return await processor.process(value, source, head)
        except PoisonMessage as exc:
            await dead(exc, exc.reason, "decode", attempt)
            return None
        except asyncio.CancelledError:
            raise
        except EnrichmentFailed as exc:
            first_failure = first_failure or time.time()
            if attempt == settings.max_attempts:
                await dead(exc, exc.reason, "enrich", attempt)
                return None
            RETRIES.labels(exc.reason).inc()
            cap = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
            await asyncio.sleep(random.uniform(cap / 2, cap))  # exponential, with jitter
        except Exception as exc:  # a bug must not skip the event: it goes to the DLQ instead
            log.exception("unexpected processing error")
            await dead(exc, "unexpected_error", "process", attempt)
            return None
    return None


async def _dead_letter(
    outputs: Outputs,
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
    partitions = outputs.settings.dlq_partitions
    await outputs.send(
        source,
        outputs.settings.dlq_topic,
        value or b"",
        key,
        source.partition % partitions,
        headers,
    )


def classification_map(policy_file: Path) -> tuple[dict[str, str], str]:
    """Event type -> data classification, read from the policy file the gateway enforces."""
    if not policy_file.exists():
        return {}, "internal"
    raw = yaml.safe_load(policy_file.read_text()) or {}
    return dict(raw.get("classification") or {}), str(raw.get("default_classification", "internal"))


def build_processor(
    settings: WorkerSettings,
    registry: RegistrySettings,
    keys: HmacKeyring,
    mask_keys: HmacKeyring,
    catalog: Catalog | None = None,
) -> tuple[Processor, Encoder]:
    """Wire the processor from settings: registry lookups, enrichers, masker, routes.

    Returns the processor and the checkpoint encoder. The signed-event and checkpoint schemas
    must be registered (``sealstream schemas register``).
    """
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    catalog = catalog or Catalog()
    client = SchemaRegistryClient(registry.client_config())

    def registered(topic: str, schema: dict[str, Any]) -> Encoder:
        subject = subject_for(topic, schema)
        found = client.lookup_schema(subject, Schema(json.dumps(schema), "AVRO"))
        if found.schema_id is None:
            raise RuntimeError(f"{subject} is not registered; run `sealstream schemas register`")
        return Encoder(int(found.schema_id), schema)

    pii = {t: catalog.pii_fields(t) for t in catalog.event_types()}
    classification, default = classification_map(settings.policy_file)
    pipeline = Pipeline(
        [
            TimeFields(),
            ClientAttributes(),
            PiiClassification(classification, pii, default),
            TenantDirectory(settings.tenants_file),
            *([SlowTenant(settings.fault_slow_tenant)] if settings.fault_slow_tenant else []),
        ]
    )
    processor = Processor(
        Decoder(registry_lookup(client)),
        pipeline,
        Masker(mask_keys, pii),
        RoutingTable.load(settings.routes_file),
        keys,
        registered(settings.signed_topic, catalog.signed_schema()),
    )
    return processor, registered(settings.checkpoints_topic, catalog.checkpoint_schema())
