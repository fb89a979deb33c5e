"""Where the signing agent (``streams/agent.py``) writes, and how it reads Kafka outside faust:
the seam unit tests replace with a recorder."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException
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

log = logging.getLogger("sealstream.worker")
T = TypeVar("T")

# How long the agent waits out Kafka not answering a read it cannot go on without (the
# committed output of a chain, the group's offsets, a gap's records): a broker restart takes
# tens of seconds. A read that fails for longer, or for a reason waiting does not cure,
# raises, and the worker stops (streams/app.py) to be started again.
READ_PATIENCE_S = 300.0
# errors of a broker that is down, restarting or moving a partition's leadership
_TRANSIENT = {
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._WAIT_COORD,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
}


def transient(exc: BaseException) -> bool:
    """True for a read that failed because Kafka did not answer in time, not because it
    refused (authorization, a fatal client error)."""
    if isinstance(exc, TimeoutError):  # streams/heads.py: the records did not come in time
        return True
    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    error = exc.args[0]
    if not isinstance(error, KafkaError) or error.fatal():
        return False
    return bool(error.retriable()) or error.code() in _TRANSIENT


async def patiently(what: str, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``read(*args, **kwargs)`` in a thread, tried again with backoff while it fails
    transiently, for up to READ_PATIENCE_S.

    Before, one such failure escaped the agent while the broker restarted, and faust's
    supervisor restarted the agent alone: the record in hand and those buffered for it were
    never processed, and a partition whose last record was among them never committed it
    (the broker SIGKILL fault test: 2 accepted events missing)."""
    delay, deadline = 0.5, time.monotonic() + READ_PATIENCE_S
    while True:
        try:
            return await asyncio.to_thread(read, *args, **kwargs)
        except (KafkaException, TimeoutError) as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: Kafka did not answer (%s); trying again in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


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
    # the worker's crash, once a transaction's record was lost (``_delivered``)
    stopping: asyncio.Future[Any] | None = field(default=None, init=False)

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
        return await patiently(
            f"reading the committed tail of {self.settings.signed_topic}[{partition}]",
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
        return await patiently(
            f"reading the dead letters of {self.settings.raw_topic}[{partition}]",
            dead_letter_position,
            kafka,
            self.settings.dlq_topic,
            partition % self.settings.dlq_partitions,
            self.settings.raw_topic,
            partition,
        )

    async def resume_offset(self, kafka: KafkaSettings, partition: int) -> int | None:
        """The input offset the group must process next on ``partition`` (streams/heads.py)."""
        return await patiently(
            f"reading the committed offset of {self.settings.raw_topic}[{partition}]",
            resume_offset,
            kafka,
            self.settings.app_id,
            self.settings.raw_topic,
            partition,
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
        return await patiently(
            f"reading {self.settings.raw_topic}[{partition}] {start}..{end}",
            read_range,
            kafka,
            self.settings.raw_topic,
            partition,
            start,
            end,
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
        transactional_id = self._transactional_id(source)
        delivery = await self.app.producer.send(
            topic, key, value, partition, None, headers, transactional_id=transactional_id
        )
        if transactional_id is not None:
            delivery.add_done_callback(self._delivered)

    def _delivered(self, delivery: asyncio.Future[Any]) -> None:
        """A record of a partition's transaction that Kafka did not take (it timed out while
        the broker was down, say) leaves the transaction able only to abort: the worker stops
        now and is started again, to sign that partition again from its committed output.
        Waiting for the commit to fail instead held the partition until its next input
        record, minutes later in the broker SIGKILL test (a checkpoint the anchor timer sent
        during the outage); a chain must not go on above a record it lost either."""
        if delivery.cancelled() or delivery.exception() is None or self.app.should_stop:
            return
        error = delivery.exception()
        log.critical("a record of a transaction was not written (%r): the worker stops", error)
        self.stopping = asyncio.ensure_future(self.app.crash(error))
