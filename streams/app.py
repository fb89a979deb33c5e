"""The faust app: consumes ``events.raw``, writes ``events.signed``, ``events.raw.dlq`` and
``audit.checkpoints``.

Delivery: ``processing_guarantee="exactly_once"``. Each input partition is one hash chain
(``events.raw/<p>``); its head lives in the changelog-backed table ``chain-heads`` under the key
``<p>``, and the signed event goes to the same partition number of ``events.signed``. With
exactly-once, the output records, the table's changelog update and the input offset commit
are one Kafka transaction per partition, so a crash or rebalance resumes from the last
committed head: no gap, no fork, no duplicate (read with ``isolation.level=read_committed``).
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
from prometheus_client import Counter

from schemas.catalog import Catalog, subject_for
from schemas.serde import Decoder, Encoder, registry_lookup
from sealstream.integrity import ChainHead
from sealstream.keys import HmacKeyring
from sealstream.settings import KafkaSettings, RegistrySettings, WorkerSettings
from streams.enrich import (
    ClientAttributes,
    EnrichmentFailed,
    PiiClassification,
    Pipeline,
    SlowTenant,
    TenantDirectory,
    TimeFields,
)
from streams.mask import Masker
from streams.processor import PoisonMessage, Processor, Source, checkpoint, dead_letter_headers
from streams.route import RoutingTable

log = logging.getLogger("sealstream.worker")

PROCESSED = Counter(
    "sealstream_worker_events_signed_total", "Events signed", ["tenant", "event_type"]
)
DEAD = Counter("sealstream_worker_dead_letters_total", "Events dead-lettered", ["reason", "stage"])
RETRIES = Counter("sealstream_worker_retries_total", "Transient failures retried", ["reason"])


@dataclass
class Outputs:
    signed: Any
    dlq: Any
    checkpoints: Any
    checkpoint_encoder: Encoder


def _broker(kafka: KafkaSettings) -> str:
    return ";".join(f"kafka://{host}" for host in kafka.bootstrap_servers.split(","))


def create_app(
    settings: WorkerSettings,
    kafka: KafkaSettings,
    processor: Processor,
    keys: HmacKeyring,
    checkpoint_encoder: Encoder,
) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=_broker(kafka),
        processing_guarantee=settings.processing_guarantee,
        store="memory://",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        topic_disable_leader=True,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        datadir=str(settings.data_dir),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=100,
        broker_commit_interval=1.0,
    )
    raw = app.topic(
        settings.raw_topic,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.partitions,
    )
    outputs = Outputs(
        signed=app.topic(
            settings.signed_topic,
            value_serializer="raw",
            key_serializer="raw",
            partitions=settings.partitions,
        ),
        dlq=app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw"),
        checkpoints=app.topic(
            settings.checkpoints_topic, value_serializer="raw", key_serializer="raw"
        ),
        checkpoint_encoder=checkpoint_encoder,
    )
    heads = app.Table("chain-heads", default=None, partitions=settings.partitions)

    @app.agent(raw)
    async def sign_events(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            headers = {k: (v or b"") for k, v in (message.headers or [])}
            source = Source(message.topic, message.partition, message.offset, headers)
            key = str(source.partition)
            stored = heads.get(key)
            head = ChainHead(stored[0], stored[1]) if stored else ChainHead()
            signed = await _process_with_retries(
                processor, settings, event.value, source, head, outputs, message.key
            )
            if signed is None:
                continue
            heads[key] = [signed.head.seq, signed.head.hash]
            await outputs.signed.send(
                key=message.key,
                value=signed.value,
                partition=source.partition,
                headers=[("correlation_id", headers.get("correlation_id", b""))],
            )
            PROCESSED.labels(signed.record["tenant"], signed.record["event_type"]).inc()
            if signed.head.seq % settings.checkpoint_every == 0:
                await _emit_checkpoint(outputs, source.chain_id, signed.head, keys)

    app.sign_events = sign_events  # type: ignore[attr-defined]
    app.chain_heads = heads  # type: ignore[attr-defined]
    return app


async def _emit_checkpoint(
    outputs: Outputs, chain_id: str, head: ChainHead, keys: HmacKeyring
) -> None:
    record = checkpoint(chain_id, head, keys)
    await outputs.checkpoints.send(
        key=chain_id.encode(), value=outputs.checkpoint_encoder.encode(record)
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
    for attempt in range(1, settings.max_attempts + 1):
        try:
            return await processor.process(value, source, head)
        except PoisonMessage as exc:
            await _dead_letter(
                outputs,
                value,
                key,
                source,
                exc,
                exc.reason,
                "decode",
                attempt,
                time.time(),
                time.time(),
            )
            return None
        except asyncio.CancelledError:
            raise
        except EnrichmentFailed as exc:
            now = time.time()
            first_failure = first_failure or now
            if attempt == settings.max_attempts:
                await _dead_letter(
                    outputs,
                    value,
                    key,
                    source,
                    exc,
                    exc.reason,
                    "enrich",
                    attempt,
                    first_failure,
                    now,
                )
                return None
            RETRIES.labels(exc.reason).inc()
            cap = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
            await asyncio.sleep(random.uniform(cap / 2, cap))  # exponential, with jitter
        except Exception as exc:  # a bug must not skip the event: it goes to the DLQ instead
            log.exception("unexpected processing error")
            await _dead_letter(
                outputs,
                value,
                key,
                source,
                exc,
                "unexpected_error",
                "process",
                attempt,
                time.time(),
                time.time(),
            )
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
    DEAD.labels(reason, stage).inc()
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
    await outputs.dlq.send(key=key, value=value or b"", headers=headers)


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
