"""Assemble and run the two sinks (the CLI's ``sealstream sink clickhouse|objects``)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from schemas.serde import Decoder, registry_lookup
from sealstream.settings import (
    ClickHouseSettings,
    KafkaSettings,
    ObjectStoreSettings,
    RegistrySettings,
    SinkSettings,
)
from sinks.runner import Limits, SinkRunner

log = logging.getLogger("sealstream.sink")


def registry_decoder(registry: RegistrySettings) -> Decoder:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return Decoder(registry_lookup(SchemaRegistryClient(registry.client_config())))


def clickhouse_runner(
    kafka: KafkaSettings,
    registry: RegistrySettings,
    clickhouse: ClickHouseSettings,
    sink: SinkSettings,
) -> tuple[SinkRunner, Any]:
    """The ClickHouse sink's runner (after migrating) and its client."""
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.migrations import migrate
    from sinks.clickhouse.sink import ClickHouseStore, topic_ids

    client = connect(clickhouse)
    report = migrate(client, clickhouse)
    log.info("clickhouse %s migrations %s", clickhouse.dsn, report.as_dict())
    topics = [
        sink.signed_topic,
        sink.decisions_topic,
        sink.dlq_topic,
        sink.checkpoints_topic,
        sink.receipts_topic,
    ]
    store = ClickHouseStore(
        client,
        clickhouse,
        sink,
        registry_decoder(registry),
        sink.clickhouse_group,
        topic_ids(kafka.client_config(), topics),
    )
    limits = Limits(
        sink.clickhouse_max_records, sink.clickhouse_max_bytes, sink.clickhouse_max_age_s
    )
    return SinkRunner(kafka, sink, sink.clickhouse_group, store.topics, store, limits), client


def object_runner(
    kafka: KafkaSettings,
    registry: RegistrySettings,
    objects: ObjectStoreSettings,
    sink: SinkSettings,
) -> SinkRunner:
    from sinks.objects.sink import ColdStore
    from sinks.objects.store import ObjectStore

    store = ColdStore(ObjectStore(objects), objects, registry_decoder(registry))
    log.info("object sink writing to %s", store.store.description)
    limits = Limits(sink.objects_max_records, sink.objects_max_bytes, sink.objects_max_age_s)
    return SinkRunner(kafka, sink, sink.objects_group, [sink.signed_topic], store, limits)


def start_query_endpoint(
    clickhouse: ClickHouseSettings,
    kafka: KafkaSettings,
    registry: RegistrySettings,
    audit_topic: str,
    health: Any = None,
) -> Any:
    """Serve ``/v1/query`` from this process (it owns the embedded engine); returns the
    uvicorn server (``should_exit = True`` stops it)."""
    import uvicorn

    from producers.auth import Keyring, TokenVerifier
    from producers.revocation import follow as follow_revocations
    from sealstream.audit import AuditLog
    from sealstream.cli.gateway import auth_settings
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.endpoint import create_query_app

    auth = auth_settings()
    verifier = TokenVerifier(auth, Keyring.from_settings(auth))
    follow_revocations(kafka, auth, verifier.revocations)
    audit = AuditLog(kafka, registry, audit_topic)
    from sealstream.keys import load_hmac_keyring
    from sealstream.settings import KeySettings
    from sinks.objects.store import ObjectStore
    from sinks.trail import audit_trail

    objects = ObjectStoreSettings()
    cold = ObjectStore(objects)
    keys = load_hmac_keyring(KeySettings())
    app = create_query_app(
        connect(clickhouse, database=clickhouse.database),
        threading.Lock(),
        verifier,
        audit.record,
        clickhouse.database,
        clickhouse.query_max_rows,
        clickhouse.query_timeout_s,
        health,
        lambda read, event_id: audit_trail(read, event_id, keys, cold, objects.prefix),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=clickhouse.query_host,
            port=clickhouse.query_port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="query-endpoint", daemon=True)
    thread.start()
    log.info(
        "query endpoint on http://%s:%d/v1/query", clickhouse.query_host, clickhouse.query_port
    )
    return server
