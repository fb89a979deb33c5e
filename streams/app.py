"""The faust app: consumes ``events.raw``, writes ``events.signed``, ``events.raw.dlq`` and
``audit.checkpoints``.

Delivery: ``processing_guarantee="exactly_once"``. Each input partition is one hash chain
(``events.raw/<p>``); its head is the agent's (``PartitionState.head``), copied with each
checkpoint into the changelog-backed table ``chain-heads`` under the key ``<p>`` as
``[seq, head hash, last source offset]``, and the signed event goes to the same
partition number of ``events.signed``. faust redelivers the last message of a partition after
a rebalance or restart; the head's source offset makes the agent skip it (idempotence). With
exactly-once, the output records and the input offset commit are one Kafka transaction per
partition, and a new owner takes the head from the committed output, so a crash or rebalance
resumes from the last committed head: no gap, no fork, no duplicate (read with
``isolation.level=read_committed``).
An event the gateway produced twice (a retry it could not recognize) is dropped by its
``(tenant, event_id)`` (``streams/dedup.py``).

This module is the wiring only: the app, its topic and table, and the registration of the
agent (``streams/agent.py``), its timer and the rebalance signals; the agent writes through
``streams/outputs.py`` and its processor is built in ``streams/wiring.py``.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import faust

from schemas.serde import Encoder
from sealstream.keys import HmacKeyring
from sealstream.settings import KafkaSettings, WorkerSettings
from sealstream.topics import PRODUCER_MAX_REQUEST_BYTES
from streams.agent import Signer
from streams.outputs import Outputs
from streams.processor import Processor
from streams.wiring import build_processor, classification_map

log = logging.getLogger("sealstream.worker")

# imported from here by the CLI, the benchmarks and the tests
__all__ = ["Outputs", "build_processor", "classification_map", "create_app"]

# the names faust knew the agent and the timer by when they were closures of create_app
# (its agent registry, its log lines): kept
AGENT_NAME = "streams.app.sign_events"
TIMER_NAME = "streams.app.create_app.<locals>.anchor_quiet_chains"


def _broker(kafka: KafkaSettings) -> str:
    return ";".join(f"kafka://{host}" for host in kafka.bootstrap_servers.split(","))


def _credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """faust's (aiokafka's) form of the broker security librdkafka clients get from
    :meth:`KafkaSettings.client_config`: TLS verified against the configured CA, SASL."""
    protocol = kafka.security_protocol.value
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        cafile = str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        context = ssl.create_default_context(cafile=cafile)
    if not protocol.startswith("SASL"):
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.client_config().get("sasl.password"),
        ssl_context=context,
        mechanism=kafka.sasl_mechanism or "PLAIN",
    )


class WorkerApp(faust.App):
    """faust's app, but an exception that escapes the agent stops the worker (it exits
    non-zero; ``up`` starts it again).

    faust's own answer (docs/userguide/agents.rst, "agent errors") is to commit what the
    consumer acked and start a new agent in the same process: the record the agent held is
    never processed, nor those buffered for it, and a partition whose last record was among
    them never commits it (the broker SIGKILL test lost 2 accepted events so, after a read of
    the committed output timed out). A new process resumes every partition from its
    committed input and output instead. faust has no public setting for this; the method
    overridden is the one ``App.agent`` gives every agent as its error handler."""

    async def _on_agent_error(self, agent: Any, exc: BaseException) -> None:
        log.critical("the signing agent failed (%r): the worker stops", exc)
        await self.crash(exc)


def _faust_app(settings: WorkerSettings, kafka: KafkaSettings) -> faust.App:
    return WorkerApp(
        settings.app_id,
        broker=_broker(kafka),
        broker_credentials=_credentials(kafka),
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
        # faust's default, stated: a revocation waits until every started message is acked,
        # so the agent always finishes the record (a frame of many events) in hand
        stream_wait_empty=True,
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        producer_max_batch_size=settings.producer_max_batch_bytes,
    )


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
    app = _faust_app(settings, kafka)
    raw = app.topic(
        settings.raw_topic,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.partitions,
    )
    outputs = outputs or Outputs(app, settings, checkpoint_encoder)
    heads = app.Table("chain-heads", default=None, partitions=settings.partitions)
    signer = Signer(settings, kafka, processor, keys, outputs, heads, signed_limit)
    app.on_partitions_revoked.connect(signer.on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(signer.on_assigned)  # type: ignore[arg-type]
    # faust's timer wraps the function in its own loop; tests call the function itself
    app.timer(interval=max(0.1, settings.checkpoint_interval_s / 2), name=TIMER_NAME)(
        signer.anchor_quiet_chains
    )
    sign_events = app.agent(raw, name=AGENT_NAME)(signer.sign_events)

    app.sign_events = sign_events  # type: ignore[attr-defined]
    app.signer = signer  # type: ignore[attr-defined]
    app.chain_heads = heads  # type: ignore[attr-defined]
    app.anchor_quiet_chains = signer.anchor_quiet_chains  # type: ignore[attr-defined]
    return app
