"""The consume-batch-write-commit loop both sinks share, with exactly-once batches.

Why not a library: Kafka Connect is the JVM tool for this and faust has no batch sinks; the
loop below is small, and its one unusual part (pending ranges, next) is the point of it.

**Pending ranges.** A batch is the records of one partition between two offsets. Before a
batch is written, the sink commits the batch's *first* offset (its position does not move)
with the metadata ``sealstream:pending:<first>-<last>``; after the store has accepted the
batch it commits ``last + 1`` with empty metadata. A sink that crashes between the two finds
the pending range at its next assignment and rebuilds exactly that batch, so the store sees the
same records again: ClickHouse recognizes the block by its deterministic deduplication token,
the object store gets byte-identical files under the same names. The range lives in Kafka's
offset store, so it survives machine loss, and the pending commit also fences zombies: a sink
that lost its partitions fails that commit (stale generation) and writes nothing.

**Store unavailable.** ``store.write`` raises :class:`StoreUnavailable`; the runner pauses every
assigned partition, keeps polling (group membership, rebalances) with jittered exponential
backoff and retries the *same* batch until it is accepted, then resumes. Nothing is committed
meanwhile, so nothing is lost; the backlog waits in Kafka.

**Records a store cannot take** (undecodable, unconvertible) come back from ``write`` as
:class:`Rejected`; they go to the sink's dead-letter topic, with the reason in headers, before
the offsets move past them.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from sealstream.deadletters import DeadLetterHeaders, source_headers
from sealstream.logs import bound
from sealstream.settings import KafkaSettings, SinkSettings
from sealstream.tracing import TRACE_HEADERS, Hops, Tracing

log = logging.getLogger("sealstream.sink")

PENDING_PREFIX = "sealstream:pending:"

RECORDS = Counter(
    "sealstream_sink_records_total", "Records written to the store", ["sink", "topic"]
)
BATCHES = Counter("sealstream_sink_batches_total", "Batches written", ["sink"])
EVENTS = Counter(  # labels as the gateway's and the workers' (tenant, event_type)
    "sealstream_sink_events_stored_total",
    "Signed events accepted by the store (a rebuilt batch counts again)",
    ["sink", "tenant", "event_type"],
)
REPLAYED = Counter(
    "sealstream_sink_pending_batches_rebuilt_total",
    "Batches rebuilt from a pending range after a crash or rebalance",
    ["sink"],
)
UNAVAILABLE = Counter(
    "sealstream_sink_store_unavailable_total", "Writes refused by the store (retried)", ["sink"]
)
DEAD = Counter(
    "sealstream_sink_dead_letters_total", "Records the store could not take", ["sink", "reason"]
)
WRITE_SECONDS = Histogram(
    "sealstream_sink_write_seconds", "Time for the store to accept one batch", ["sink"]
)
PAUSED = Gauge("sealstream_sink_paused", "1 while the store is unavailable", ["sink"])


class StoreUnavailable(Exception):
    """The store refused or failed a write that may succeed later (retry the same batch)."""


RESTART_TO_REPAIR = 75  # EX_TEMPFAIL: the sink stops so its supervisor starts it again
CONSUMER_FATAL = 69  # EX_UNAVAILABLE: the Kafka consumer cannot go on; a new one can


class RestartToRepair(Exception):
    """After an outage the store found damage that only a fresh start of it repairs."""


@dataclass(frozen=True)
class Rejected:
    """A record the store cannot take, with a machine-readable reason."""

    message: Message
    reason: str
    detail: str


@dataclass
class Batch:
    """Records of one partition, offsets ascending; ``first``/``last`` are record offsets."""

    topic: str
    partition: int
    records: list[Message] = field(default_factory=list)
    nbytes: int = 0
    started: float = 0.0

    @property
    def first(self) -> int:
        return int(self.records[0].offset() or 0)

    @property
    def last(self) -> int:
        return int(self.records[-1].offset() or 0)

    def add(self, message: Message) -> None:
        if not self.records:
            self.started = time.monotonic()
        self.records.append(message)
        self.nbytes += len(message.value() or b"") + len(message.key() or b"")


class Store(Protocol):
    name: str

    def write(self, batch: Batch) -> list[Rejected]:
        """Make ``batch`` durable (idempotently: the same batch may come again)."""

    def close(self) -> None: ...

    def after_outage(self, since: float) -> None:
        """Called once writes succeed again after an outage that began at ``since`` (epoch
        s); raises RestartToRepair if the store needs a fresh start of the sink."""


@dataclass(frozen=True)
class Limits:
    max_records: int
    max_bytes: int
    max_age_s: float


def pending_metadata(first: int, last: int) -> str:
    return f"{PENDING_PREFIX}{first}-{last}"


def parse_pending(metadata: str | None) -> tuple[int, int] | None:
    """``(first, last)`` from a pending-range commit, else None."""
    if not metadata or not metadata.startswith(PENDING_PREFIX):
        return None
    first, _, last = metadata[len(PENDING_PREFIX) :].partition("-")
    try:
        return int(first), int(last)
    except ValueError:
        return None


@dataclass
class _Partition:
    batch: Batch
    replay_until: int | None = None  # the last offset of a pending range being rebuilt
    overflow: list[Message] = field(default_factory=list)

    def add(self, message: Message) -> None:
        offset = int(message.offset() or 0)
        if self.replay_until is not None and offset > self.replay_until:
            self.overflow.append(message)
        else:
            self.batch.add(message)

    def ready(self, limits: Limits, now: float) -> bool:
        if not self.batch.records:
            return False
        if self.replay_until is not None:  # exactly the pending range, whatever the limits
            return self.batch.last >= self.replay_until or bool(self.overflow)
        return (
            len(self.batch.records) >= limits.max_records
            or self.batch.nbytes >= limits.max_bytes
            or now - self.batch.started >= limits.max_age_s
        )

    def reset(self) -> None:
        self.batch = Batch(self.batch.topic, self.batch.partition)
        self.replay_until = None
        pending, self.overflow = self.overflow, []
        for message in pending:
            self.batch.add(message)


class SinkRunner:
    """Consume ``topics`` in consumer group ``group`` and write batches to ``store``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: SinkSettings,
        group: str,
        topics: Sequence[str],
        store: Store,
        limits: Limits,
        on_batch: Callable[[Batch], None] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing(f"sink-{store.name}")
        self.group = group
        self.topics = list(topics)
        self.store = store
        self.limits = limits
        self.on_batch = on_batch
        self.stop_event = threading.Event()
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._paused = False
        self._outage_since: float | None = None  # epoch s of the first refused write
        self.exit_code = 0
        self._writes = 0
        static = {"group_instance_id": settings.instance_id} if settings.instance_id else {}
        self.consumer = Consumer(
            kafka.client_config(
                **static,
                session_timeout_ms=settings.session_timeout_ms,
                group_id=group,
                enable_auto_commit=False,
                enable_auto_offset_store=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                partition_assignment_strategy="cooperative-sticky",
                max_poll_interval_ms=600_000,
                client_id=f"{kafka.client_id}-{store.name}",
            )
        )
        self.producer = Producer(
            kafka.client_config(enable_idempotence=True, acks="all", linger_ms=5)
        )

    # -- assignment -------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30) if partitions else []
        for tp in committed:
            part = _Partition(Batch(tp.topic, tp.partition))
            pending = parse_pending(getattr(tp, "metadata", None))
            if pending is not None:
                part.replay_until = pending[1]
                REPLAYED.labels(self.store.name).inc()
                log.warning(
                    "rebuilding pending batch topic=%s partition=%d range=%d-%d",
                    tp.topic,
                    tp.partition,
                    *pending,
                )
            self._parts[(tp.topic, tp.partition)] = part
        log.info("assigned %s", [(tp.topic, tp.partition) for tp in partitions])
        if self._paused and partitions:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing of a revoked partition was committed past its last written batch; whoever
        # gets it next re-reads the rest (and rebuilds a pending range, if one is open).
        for tp in partitions:
            self._parts.pop((tp.topic, tp.partition), None)
        log.info("revoked %s", [(tp.topic, tp.partition) for tp in partitions])

    # -- main loop --------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        # A file-size limit (or a full quota) must surface as a failed write, not kill us.
        if hasattr(signal, "SIGXFSZ"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())

    def run(self) -> None:
        self.consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("sink %s consuming %s as group %s", self.store.name, self.topics, self.group)
        try:
            while not self.stop_event.is_set():
                self._take(self.consumer.consume(num_messages=2000, timeout=0.2))
                now = time.monotonic()
                ready = [p for p in self._parts.values() if p.ready(self.limits, now)]
                if ready:
                    self._flush(ready)
            # Graceful stop: write what is buffered, so a restart has nothing to re-read.
            self._flush([p for p in self._parts.values() if p.batch.records])
        finally:
            self.producer.flush(30)
            self.consumer.close()
            self.store.close()

    def _take(self, messages: list[Message]) -> None:
        for message in messages:
            error = message.error()
            if error is not None:
                # librdkafka reports a fatal error as an event of code _FATAL whose
                # KafkaError is not flagged fatal (seen: fatal() False on the fenced member)
                if error.fatal() or error.code() == KafkaError._FATAL:
                    self._fatal(error)
                    return
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            part = self._parts.get((message.topic() or "", int(message.partition() or 0)))
            if part is not None:
                part.add(message)

    def _flush(self, ready: list[_Partition]) -> None:
        if not ready:
            return
        pending = [
            TopicPartition(
                p.batch.topic,
                p.batch.partition,
                p.batch.first,
                metadata=pending_metadata(p.batch.first, p.batch.last),
            )
            for p in ready
        ]
        try:
            self.consumer.commit(offsets=pending, asynchronous=False)
        except KafkaException as exc:  # lost the partitions (rebalance): write nothing
            log.warning("pending commit refused, dropping %d batches: %s", len(ready), exc)
            for p in ready:
                self._parts.pop((p.batch.topic, p.batch.partition), None)
            return
        done: list[TopicPartition] = []
        for part in ready:
            key = (part.batch.topic, part.batch.partition)
            if not self._write(part.batch) or self._parts.get(key) is not part:
                continue  # revoked while the store was down: the next owner rebuilds it
            done.append(TopicPartition(key[0], key[1], part.batch.last + 1, metadata=""))
            part.reset()
        if done:
            try:
                self.consumer.commit(offsets=done, asynchronous=False)
            except KafkaException as exc:  # the pending range makes the next owner dedupe
                log.warning("offset commit failed after write: %s", exc)
        if self._outage_since is not None and not self._paused:
            self._after_outage(self._outage_since)

    def _fatal(self, error: KafkaError) -> None:
        """A fatal consumer error leaves the consumer unusable for good. Seen in the fault
        suite: after a broker restart the static member was fenced (FENCED_INSTANCE_ID) and
        the sink sat there, consuming nothing, until the run ended. Stop, so the supervisor
        starts a fresh consumer; nothing uncommitted is lost (the pending ranges)."""
        log.error("consumer failed for good, stopping (exit %d): %s", CONSUMER_FATAL, error)
        self.exit_code = CONSUMER_FATAL
        self.stop_event.set()

    def _after_outage(self, since: float) -> None:
        self._outage_since = None
        try:
            self.store.after_outage(since)
        except RestartToRepair as exc:
            log.error(
                "store %s needs a restart after the outage, stopping (exit %d): %s",
                self.store.name,
                RESTART_TO_REPAIR,
                exc,
            )
            self.exit_code = RESTART_TO_REPAIR
            self.stop_event.set()

    def _crash_if(self, point: str) -> None:
        if (
            self.settings.fault_crash_point == point
            and self._writes == self.settings.fault_crash_after
        ):
            once = self.settings.fault_crash_once
            if once is not None:
                marker = once.with_name(f"{once.name}.{self.store.name}")
                if marker.exists():
                    return
                marker.touch()
            log.error("fault drill: SIGKILL %s write %d", point, self._writes)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    def _write(self, batch: Batch) -> bool:
        """Write ``batch`` until the store accepts it; False if the partition was revoked. A
        span per trace among its records covers the write (sealstream/tracing.py), and every
        line logged meanwhile names the batch (sealstream/logs.py)."""
        attributes = {
            "messaging.destination.name": batch.topic,
            "sealstream.store": self.store.name,
        }
        hops = Hops(self.tracing, f"store {self.store.name}", attributes)
        for message in batch.records:
            trace = trace_headers(message)
            if trace:  # only what a stage traced: audit decisions and checkpoints are not
                hops.hop(trace)
        offsets = f"{batch.first}..{batch.last}"
        with bound(topic=batch.topic, partition=batch.partition, offsets=offsets), hops:
            return self._write_batch(batch)

    def _write_batch(self, batch: Batch) -> bool:
        if self.settings.fault_crash_topic in ("", batch.topic):
            self._writes += 1
        self._crash_if("before_write")
        attempt = 0
        key = (batch.topic, batch.partition)
        while True:
            started = time.perf_counter()
            try:
                rejected = self.store.write(batch)
                break
            except StoreUnavailable as exc:
                UNAVAILABLE.labels(self.store.name).inc()
                if self._outage_since is None:
                    self._outage_since = time.time()
                attempt += 1
                delay = min(
                    self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1)
                ) * random.uniform(0.5, 1.0)
                log.warning(
                    "store %s unavailable (attempt %d, retry in %.1fs): %s",
                    self.store.name,
                    attempt,
                    delay,
                    exc,
                )
                self._pause()
                self._wait(delay)
                if self.stop_event.is_set() or key not in self._parts:
                    return False
        WRITE_SECONDS.labels(self.store.name).observe(time.perf_counter() - started)
        if self._paused:
            self._resume()
        self._dead_letter(rejected)
        self._crash_if("after_write")
        RECORDS.labels(self.store.name, batch.topic).inc(len(batch.records) - len(rejected))
        BATCHES.labels(self.store.name).inc()
        if self.on_batch is not None:
            self.on_batch(batch)
        return True

    def _pause(self) -> None:
        if not self._paused:
            self.consumer.pause(self.consumer.assignment())
            self._paused = True
            PAUSED.labels(self.store.name).set(1)

    def _resume(self) -> None:
        self.consumer.resume(self.consumer.assignment())
        self._paused = False
        PAUSED.labels(self.store.name).set(0)
        log.info("store %s available again, resumed", self.store.name)

    def _wait(self, seconds: float) -> None:
        """Keep the group membership (and rebalance callbacks) alive while paused."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            # outside the stalled batch's log context: rebalances and consumer errors logged
            # meanwhile are of other partitions
            contextvars.Context().run(self._poll_paused, min(0.5, seconds))

    def _poll_paused(self, timeout: float) -> None:
        self._take(self.consumer.consume(num_messages=100, timeout=timeout))

    def _dead_letter(self, rejected: list[Rejected]) -> None:
        if not rejected:
            return
        for item in rejected:
            m = item.message
            error = DeadLetterHeaders(
                reason=item.reason,
                stage=f"sink-{self.store.name}",
                message=item.detail,
                topic=m.topic() or "",
                partition=int(m.partition() or 0),
                offset=int(m.offset() or 0),
                attempts=1,
                last_failure_ms=int(time.time() * 1000),
            )
            headers: list[tuple[str, str | bytes | None]] = [
                *error.to_headers(),
                *source_headers(header_pairs(m)),
            ]
            self.producer.produce(
                self.settings.dead_letter_topic, m.value(), m.key(), headers=headers
            )
            DEAD.labels(self.store.name, item.reason).inc()
        remaining = self.producer.flush(30)
        if remaining:
            raise KafkaException(f"{remaining} sink dead letters not acknowledged")


def header_pairs(message: Message) -> list[tuple[str, bytes]]:
    """A record's headers with values, as bytes."""
    pairs: list[tuple[str, bytes]] = []
    for key, value in cast(list[tuple[str, Any]], message.headers() or []):
        if value is not None:
            pairs.append((key, value if isinstance(value, bytes) else str(value).encode()))
    return pairs


def message_headers(message: Message) -> dict[str, bytes]:
    """A record's headers as a dict (last value wins)."""
    return dict(header_pairs(message))


def trace_headers(message: Message) -> dict[str, bytes]:
    """A record's trace context headers (``traceparent``, ``tracestate``), if it has any."""
    return {
        name: value
        for name, value in cast(list[tuple[str, Any]], message.headers() or [])
        if name in TRACE_HEADERS and isinstance(value, bytes)
    }
