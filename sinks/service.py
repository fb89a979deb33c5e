"""Assemble and run the two sinks (the CLI's ``sealstream sink clickhouse|objects``)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from schemas.serde import Decoder, registry_lookup
from sealstream.settings import (
    ClickHouseSettings,
    KafkaSettings,
    ObjectStoreSettings,
    RegistrySettings,
    SinkSettings,
)
from sinks.clickhouse.trail_index import KIND_OF_TABLE, TrailIndex, entries
from sinks.runner import Limits, SinkRunner, StoreUnavailable

log = logging.getLogger("sealstream.sink")
_CLAIMS: list[Any] = []  # the embedded engine's claim (sinks/clickhouse/client.py: reserve)


def registry_decoder(registry: RegistrySettings) -> Decoder:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return Decoder(registry_lookup(SchemaRegistryClient(registry.client_config())))


def clickhouse_runner(
    kafka: KafkaSettings,
    registry: RegistrySettings,
    clickhouse: ClickHouseSettings,
    sink: SinkSettings,
    index: TrailIndex | None = None,
) -> tuple[SinkRunner, Any]:
    """The ClickHouse sink's runner (after migrating and repairing) and its client. With an
    audit index, the index is rebuilt from ClickHouse first if it is not complete, then kept
    in step."""
    from sinks.clickhouse.client import connect, engine_dir, reserve
    from sinks.clickhouse.migrations import migrate
    from sinks.clickhouse.outages import OutageLog, marker_path
    from sinks.clickhouse.sink import ClickHouseStore, topic_ids

    if clickhouse.embedded:  # held for the process's life: tools then use the endpoint
        claim = reserve(clickhouse, exclusive=False)
        assert claim is not None
        _CLAIMS.append(claim)
    client = connect(clickhouse)
    report = migrate(client, clickhouse)
    log.info("clickhouse %s migrations %s", clickhouse.dsn, report.as_dict())
    if not clickhouse.embedded:  # a server: its roles, row policies and users (roles.py)
        from sinks.clickhouse.roles import AccessSettings, apply_access

        try:
            log.info(
                "clickhouse access: %d statements",
                apply_access(client, clickhouse, AccessSettings()),
            )
        except Exception as exc:  # a server whose access is managed elsewhere: say so, go on
            log.warning("clickhouse access control not applied (%s): grant the roles of "
                        "sinks/clickhouse/roles.py by other means", exc)  # fmt: skip
    topics = [
        sink.signed_topic,
        sink.decisions_topic,
        sink.dlq_topic,
        sink.checkpoints_topic,
        sink.receipts_topic,
        sink.replays_topic,
    ]
    on_stored = None
    if index is not None:
        if not index.complete:
            rebuild_index(index, client, clickhouse.database)
        on_stored = index_writer(index, clickhouse.hot_retention_days)
    store = ClickHouseStore(
        client,
        clickhouse,
        sink,
        registry_decoder(registry),
        sink.clickhouse_group,
        topic_ids(kafka.client_config(), topics),
        on_stored,
    )
    on_batch = None
    if clickhouse.embedded:
        store.outage_log = OutageLog(marker_path(engine_dir(clickhouse)))
        on_batch = store.outage_log.written
        repair_embedded(store, kafka, sink.clickhouse_group)
    limits = Limits(
        sink.clickhouse_max_records, sink.clickhouse_max_bytes, sink.clickhouse_max_age_s
    )
    runner = SinkRunner(
        kafka, sink, sink.clickhouse_group, store.topics, store, limits, on_batch=on_batch
    )
    return runner, client


def repair_embedded(store: Any, kafka: KafkaSettings, group: str) -> None:
    """At start, before consuming: what a storage outage may have broken in the embedded
    engine, set aside by it, rebuilt or read back from Kafka (sinks/clickhouse/parts.py,
    sinks/clickhouse/recover.py). Raises if Kafka cannot be read; the supervisor starts the
    sink again, and the repair with it."""
    from sinks.clickhouse.parts import repair_at_start
    from sinks.clickhouse.recover import KafkaReader, Restorer

    assert store.outage_log is not None
    restorer = Restorer(store, lambda: KafkaReader(kafka, group), store.outage_log.path)
    try:
        repaired = repair_at_start(store.client, store.settings.database, restorer)
        restorer.finish()
    finally:
        restorer.close()
    if repaired.rebuilt or repaired.lost or repaired.restored:
        log.warning("clickhouse broken parts at start %s", repaired.as_dict())
    elif repaired.set_aside:  # covered by the parts they were merged from: nothing missing
        log.info("clickhouse broken parts at start %s", repaired.as_dict())


def rebuild_index(index: TrailIndex, client: Any, database: str) -> dict[str, int]:
    """Fill the audit index from ClickHouse (first start, or after ``replay cold``)."""

    def select(table: str, columns: list[str]) -> Any:
        extra = ", stored_at" if table == "events" else ""
        sql = f"SELECT {', '.join(columns)}{extra} FROM {database}.{table}"
        with client.query_row_block_stream(sql) as blocks:
            for block in blocks:
                yield from block

    started = time.monotonic()
    counts = index.rebuild(select, lambda kind, n: log.info("audit index: %d %s rows", n, kind))
    log.info("audit index %s rebuilt in %.1f s: %s", index.path, time.monotonic() - started, counts)
    return counts


def index_writer(
    index: TrailIndex, retention_days: int, expire_every_s: float = 600
) -> Callable[[str, list[list[Any]]], None]:
    """The ClickHouse store's ``on_stored`` hook: the accepted rows into the audit index, and
    now and then the rows past the hot retention out of it."""
    last_expiry = [0.0]

    def write(table: str, rows: list[list[Any]]) -> None:
        kind = KIND_OF_TABLE.get(table)
        if kind is None:
            return
        try:
            index.add(entries(kind, rows))
            if time.monotonic() - last_expiry[0] > expire_every_s:
                last_expiry[0] = time.monotonic()
                index.expire(int((time.time() - retention_days * 86400) * 1000))
        except sqlite3.Error as exc:  # the batch is retried (ClickHouse deduplicates it)
            raise StoreUnavailable(f"audit index {index.path} write failed: {exc}") from exc

    return write


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
    index: TrailIndex | None = None,
) -> Any:
    """Serve ``/v1/query`` from this process (it owns the embedded engine); returns the
    uvicorn server (``should_exit = True`` stops it)."""
    import uvicorn

    from schemas.audit import AuditLog
    from sealstream.auth import Keyring, TokenVerifier, auth_settings
    from sealstream.auth.revocation import follow as follow_revocations
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.endpoint import create_query_app

    auth = auth_settings()
    verifier = TokenVerifier(
        auth, Keyring.from_settings(auth), reload=lambda: Keyring.from_settings(auth)
    )
    follow_revocations(kafka, auth, verifier.revocations)
    audit = AuditLog(kafka, registry, audit_topic)
    from sealstream.keys import KeyringFile
    from sealstream.settings import KeySettings
    from sinks.objects.store import ObjectStore
    from sinks.trail import StoreSource, audit_trail, source_for

    objects = ObjectStoreSettings()
    cold = ObjectStore(objects)
    keys = KeyringFile(KeySettings())  # follows `sealstream keys rotate signing`
    app = create_query_app(
        connect(clickhouse, database=clickhouse.database),
        None,
        verifier,
        audit.record,
        clickhouse.database,
        clickhouse.query_max_rows,
        clickhouse.query_timeout_s,
        health,
        lambda read, event_id, from_store: audit_trail(
            StoreSource(read) if from_store else source_for(read, index),
            event_id,
            keys.current(),
            cold,
            objects.prefix,
        ),
        settings=clickhouse,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=clickhouse.query_host,
            port=clickhouse.query_port,
            log_level="warning",
            access_log=False,
            log_config=None,  # the process's handler (sealstream/logs.py), not uvicorn's
        )
    )
    thread = threading.Thread(target=server.run, name="query-endpoint", daemon=True)
    thread.start()
    log.info(
        "query endpoint on http://%s:%d/v1/query", clickhouse.query_host, clickhouse.query_port
    )
    return server
