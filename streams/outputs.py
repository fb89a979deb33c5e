"""Where the signing agent (``streams/agent.py``) writes, and how it reads Kafka outside faust:
the seam unit tests replace with a recorder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from schemas.serde import Decoder, Encoder
from sealstream.settings import KafkaSettings, WorkerSettings
from streams.heads import (
    CommittedTail,
    RawRecord,
    committed_tail,
    dead_letter_position,
    read_range,
    resume_offset,
)
from streams.processor import Source


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
        self,
        kafka: KafkaSettings,
        partition: int,
        decoder: Decoder,
        ours: Callable[[dict[str, Any]], bool] | None = None,
    ) -> CommittedTail:
        """The last committed signed record of ``partition`` and the events signed within the
        deduplication window (see streams/heads.py, streams/dedup.py); with ``ours``, of the
        records it accepts only."""
        return await asyncio.to_thread(
            committed_tail,
            kafka,
            self.settings.signed_topic,
            partition,
            decoder,
            int((time.time() - self.settings.dedup_window_s) * 1000),
            self.settings.dedup_max_per_partition,
            ours=ours,
        )

    async def dead_letter_position(
        self, kafka: KafkaSettings, partition: int
    ) -> tuple[int, int] | None:
        """(offset, index) of input ``partition``'s newest committed dead letter, if recent
        (streams/heads.py)."""
        return await asyncio.to_thread(
            dead_letter_position,
            kafka,
            self.settings.dlq_topic,
            partition % self.settings.dlq_partitions,
            self.settings.raw_topic,
            partition,
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
