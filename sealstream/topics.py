"""The Kafka topics the pipeline needs: names, partitions and cleanup policies.

Topics are the only contract between stages, so they are declared once here and created
explicitly (by ``sealstream stack up`` or :func:`ensure_topics`), never auto-created.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from sealstream.settings import KafkaSettings, TopicSettings

DAY_MS: Final = 24 * 3600 * 1000
# The broker's default max.message.bytes, for a topic that cannot be described yet.
BROKER_DEFAULT_MAX_MESSAGE_BYTES: Final = 1_048_588
# What the producers send at most, whatever a topic allows: librdkafka's message.max.bytes
# (the gateway) and faust's producer_max_request_size (the worker), both 1,000,000 by default.
PRODUCER_MAX_REQUEST_BYTES: Final = 1_000_000

log = logging.getLogger("sealstream.topics")


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partition count and topic-level configuration."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def _compacted() -> dict[str, str]:
    return {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}


def pipeline_topics(partitions: int = 6, topics: TopicSettings | None = None) -> list[TopicSpec]:
    """Every topic the pipeline uses (names from ``topics``, default TopicSettings from the
    environment), with explicit cleanup policies."""
    t = topics or TopicSettings()
    return [
        TopicSpec(
            t.schemas, 1, _compacted(), "schema registry state (one partition keeps total order)"
        ),
        TopicSpec(
            t.raw,
            partitions,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "validated events from the gateway",
        ),
        TopicSpec(
            t.raw_dlq,
            max(1, partitions // 2),
            {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
            "events the processors could not handle, original bytes plus error headers",
        ),
        TopicSpec(
            t.signed,
            partitions,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "enriched, signed, hash-chained events for the sinks",
        ),
        TopicSpec(
            t.signed_dlq,
            1,
            {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
            "signed events a sink could not decode or convert, with error headers",
        ),
        TopicSpec(
            t.decisions,
            max(1, partitions // 2),
            {"cleanup.policy": "delete", "retention.ms": str(90 * DAY_MS)},
            "every authorization decision, allow or deny",
        ),
        TopicSpec(
            t.checkpoints,
            1,
            {"cleanup.policy": "delete", "retention.ms": "-1"},
            "signed chain checkpoints (kept forever: verification anchors to them)",
        ),
        TopicSpec(
            t.receipts,
            max(1, partitions // 2),
            {**_compacted(), "cleanup.policy": "compact,delete", "retention.ms": str(30 * DAY_MS)},
            "signed receipts by event id: dedup of retries and GET /v1/receipts",
        ),
        TopicSpec(t.revocations, 1, _compacted(), "revoked token ids and subjects"),
        TopicSpec(
            t.dlq_replays, 1, _compacted(), "dead letters replayed or purged, by coordinates"
        ),
        TopicSpec(t.tenants, 1, _compacted(), "tenant attributes for enrichment"),
    ]


def ensure_topics(
    kafka: KafkaSettings, specs: list[TopicSpec], timeout_s: float = 30.0
) -> list[str]:
    """Create whichever of ``specs`` do not exist yet; return the names created.

    Existing topics are left as they are (idempotent), so this runs at every start.
    """
    admin = AdminClient(kafka.client_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=kafka.replication_factor,
                config=s.config,
            )
            for s in missing
        ],
        operation_timeout=timeout_s,
    )
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except Exception as exc:  # a concurrent creator may have won the race
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created


def max_message_bytes(kafka: KafkaSettings, topics: list[str]) -> dict[str, int]:
    """``max.message.bytes`` of each topic, as the broker has it (its default for a topic that
    does not exist yet or cannot be described)."""
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

    admin = AdminClient(kafka.client_config())
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics]
    found: dict[str, int] = {}
    for resource, future in admin.describe_configs(resources).items():
        try:
            entry = future.result(timeout=15).get("max.message.bytes")
            found[resource.name] = int(entry.value) if entry is not None else 0
        except Exception as exc:  # a missing topic: created later with the broker's default
            log.warning("max.message.bytes of %s unknown (%s); assuming the default", resource, exc)
        if not found.get(resource.name):
            found[resource.name] = BROKER_DEFAULT_MAX_MESSAGE_BYTES
    return found


def partition_for(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (``consistent_random``: CRC-32 of the
    key) picks for a keyed record: the gateway places its frames by it, so an event it frames
    lands where the same event replayed one by one (a dead letter) lands, in the same chain."""
    return zlib.crc32(key) % partitions


def partition_count(kafka: KafkaSettings, topic: str, timeout_s: float = 10.0) -> int:
    """How many partitions ``topic`` has (from the cluster's metadata)."""
    admin = AdminClient(kafka.client_config())
    metadata = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise RuntimeError(f"topic {topic} is not in the cluster's metadata: create it first")
    return len(metadata.partitions)


def record_limit(kafka: KafkaSettings, topics: list[str]) -> tuple[int, str]:
    """The largest record all of ``topics`` and the producers take, and which one sets it."""
    sizes = max_message_bytes(kafka, topics)
    topic = min(sizes, key=lambda name: sizes[name])
    if sizes[topic] > PRODUCER_MAX_REQUEST_BYTES:
        return PRODUCER_MAX_REQUEST_BYTES, "the producers' request limit"
    return sizes[topic], topic
