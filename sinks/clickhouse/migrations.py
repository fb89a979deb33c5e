"""The hot store's schema as versioned DDL, applied by ``sealstream clickhouse migrate``.

Each migration is a list of statements with a version number; applied versions are recorded in
``<db>.schema_migrations`` with a checksum of their text, so running ``migrate`` again changes
nothing, and a migration edited after it was applied is refused (add a new one instead).
The same SQL runs on the embedded engine (chDB) and on a ClickHouse server.

Design (docs/sinks.md has the reasoning):

* ``events`` is a ReplacingMergeTree partitioned by event day and ordered by
  ``(tenant, event_type, occurred_at, event_id)``: analyst queries filter on tenant, type and
  time; an event_id stored twice (a dead letter replayed, a retried publish) collapses at merge
  and never shows twice through the query path, which reads ``FINAL``.
* Every table remembers the insert tokens of its last ``dedup_window_blocks`` blocks
  (``non_replicated_deduplication_window``): a batch the sink rebuilds after a crash carries the
  same ``insert_deduplication_token`` and is dropped as a whole, in the tables and in every
  materialized view fed by it.
* ``events_by_id`` holds each row again as one JSON string, ordered by event_id, with 256-row
  granules and 4-8 KiB compression blocks: a lookup reads one small block of one column
  instead of an 8192-row granule of each of the 33 columns of ``events`` (2 ms instead of
  18 ms at 1M rows, one part, in the measurements behind benchmarks/sinks.py). It is the audit
  path's table, not an analyst table.
* ``*_minutely_state`` tables hold per-minute aggregate states (count, bytes, ingest-lag
  quantiles) for dashboards; ``events_minutely`` / ``dead_letters_minutely`` finalize them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from sealstream.settings import ClickHouseSettings


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        return hashlib.sha256("\n;\n".join(self.statements).encode()).hexdigest()[:16]


_DEDUP = "non_replicated_deduplication_window = {window}"

EVENTS_BY_ID_VIEW = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_by_id_mv TO {db}.events_by_id AS
SELECT event_id, tenant, occurred_at, formatRow('JSONEachRow', *) AS row
FROM {db}.events"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "events, lookups, rollups, decisions, dead letters, checkpoints",
        (
            """
CREATE TABLE IF NOT EXISTS {db}.events (
    event_id String,
    tenant LowCardinality(String),
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    signed_at DateTime64(3, 'UTC'),
    stored_at DateTime64(3, 'UTC') DEFAULT now64(3),
    producer LowCardinality(String),
    correlation_id String,
    request_id String,
    source Nullable(String),
    classification LowCardinality(String),
    route LowCardinality(String),
    payload String CODEC(ZSTD(3)),
    masked_fields Array(String),
    payload_sha256 String,
    content_sha256 String,
    hot_content_sha256 String,
    enrichment Map(String, String),
    schema_id UInt32,
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    chain_id LowCardinality(String),
    seq UInt64,
    prev_hash String,
    hash String,
    key_id LowCardinality(String),
    signature String,
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    bytes UInt32
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(occurred_at)
ORDER BY (tenant, event_type, occurred_at, event_id)
TTL toDateTime(occurred_at) + INTERVAL {ttl_days} DAY
SETTINGS """
            + _DEDUP,
            """
CREATE TABLE IF NOT EXISTS {db}.events_by_id (
    event_id String,
    tenant LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    row String CODEC(ZSTD(1))
) ENGINE = ReplacingMergeTree
ORDER BY event_id
TTL toDateTime(occurred_at) + INTERVAL {ttl_days} DAY
SETTINGS index_granularity = 256, min_compress_block_size = 4096,
         max_compress_block_size = 8192, """
            + _DEDUP,
            EVENTS_BY_ID_VIEW,
            """
CREATE TABLE IF NOT EXISTS {db}.events_minutely_state (
    minute DateTime('UTC'),
    tenant LowCardinality(String),
    event_type LowCardinality(String),
    events AggregateFunction(count),
    bytes AggregateFunction(sum, UInt64),
    lag_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, event_type, minute)
SETTINGS """
            + _DEDUP,
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_minutely_mv TO {db}.events_minutely_state AS
SELECT toStartOfMinute(received_at) AS minute, tenant, event_type,
       countState() AS events,
       sumState(toUInt64(bytes)) AS bytes,
       quantilesState(0.5, 0.95, 0.99)(
           toFloat64(greatest(0, dateDiff('millisecond', received_at, stored_at)))) AS lag_ms
FROM {db}.events
GROUP BY minute, tenant, event_type""",
            """
CREATE VIEW IF NOT EXISTS {db}.events_minutely AS
SELECT minute, tenant, event_type,
       countMerge(events) AS events,
       sumMerge(bytes) AS bytes,
       quantilesMerge(0.5, 0.95, 0.99)(lag_ms) AS ingest_lag_ms
FROM {db}.events_minutely_state
GROUP BY minute, tenant, event_type""",
            """
CREATE TABLE IF NOT EXISTS {db}.audit_decisions (
    decided_at DateTime64(3, 'UTC'),
    subject String,
    tenant LowCardinality(String),
    event_tenant LowCardinality(String),
    event_type LowCardinality(String),
    action LowCardinality(String),
    decision Enum8('ALLOW' = 1, 'DENY' = 2),
    reason_code LowCardinality(String),
    policy_version LowCardinality(String),
    request_id String,
    correlation_id String,
    client_ip Nullable(String),
    user_agent Nullable(String),
    detail Nullable(String),
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (tenant, decided_at, request_id)
SETTINGS """
            + _DEDUP,
            """
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    failed_at DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    stage LowCardinality(String),
    error_class LowCardinality(String),
    message String,
    tenant LowCardinality(String),
    event_type LowCardinality(String),
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    attempts UInt16,
    bytes UInt32,
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(failed_at)
ORDER BY (tenant, reason, failed_at)
SETTINGS """
            + _DEDUP,
            """
CREATE TABLE IF NOT EXISTS {db}.dead_letters_minutely_state (
    minute DateTime('UTC'),
    tenant LowCardinality(String),
    event_type LowCardinality(String),
    reason LowCardinality(String),
    stage LowCardinality(String),
    dead_letters AggregateFunction(count),
    bytes AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, reason, stage, event_type, minute)
SETTINGS """
            + _DEDUP,
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.dead_letters_minutely_mv
TO {db}.dead_letters_minutely_state AS
SELECT toStartOfMinute(failed_at) AS minute, tenant, event_type, reason, stage,
       countState() AS dead_letters, sumState(toUInt64(bytes)) AS bytes
FROM {db}.dead_letters
GROUP BY minute, tenant, event_type, reason, stage""",
            """
CREATE VIEW IF NOT EXISTS {db}.dead_letters_minutely AS
SELECT minute, tenant, event_type, reason, stage,
       countMerge(dead_letters) AS dead_letters, sumMerge(bytes) AS bytes
FROM {db}.dead_letters_minutely_state
GROUP BY minute, tenant, event_type, reason, stage""",
            """
CREATE TABLE IF NOT EXISTS {db}.checkpoints (
    chain_id LowCardinality(String),
    seq UInt64,
    head_hash String,
    created_at DateTime64(3, 'UTC'),
    key_id LowCardinality(String),
    signature String,
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (chain_id, seq)
SETTINGS """
            + _DEDUP,
        ),
    ),
)

MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        2,
        "receipts, for the audit trail",
        (
            """
CREATE TABLE IF NOT EXISTS {db}.receipts (
    event_id String,
    tenant LowCardinality(String),
    receipt String CODEC(ZSTD(1)),
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (event_id, tenant)
SETTINGS index_granularity = 256, min_compress_block_size = 4096,
         max_compress_block_size = 8192, """
            + _DEDUP,
        ),
    ),
)

MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        3,
        "dead letters by event id, replay markers, for the audit trail",
        (
            "ALTER TABLE {db}.dead_letters ADD COLUMN IF NOT EXISTS event_id String DEFAULT ''",
            """
CREATE TABLE IF NOT EXISTS {db}.dlq_replays (
    marker String,
    status LowCardinality(String),
    replay_id String,
    by String,
    at DateTime64(3, 'UTC'),
    event_id String,
    target Nullable(String),
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree(at)
ORDER BY marker
SETTINGS """
            + _DEDUP,
        ),
    ),
)

# Every MergeTree table the migrations create (schema_migrations aside).
TABLES = (
    "events",
    "events_by_id",
    "events_minutely_state",
    "audit_decisions",
    "dead_letters",
    "dead_letters_minutely_state",
    "checkpoints",
    "receipts",
    "dlq_replays",
)

# chDB deletes the parts a merge replaced at once (old_parts_lifetime 0; a server keeps them 8
# minutes). A merged part the engine broke while its storage failed can only be undone at the
# next start by making those parts active again (sinks/clickhouse/parts.py), so keep them:
# without them the fault suite lost 5 blocks of audit_decisions from the hot store.
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        4,
        "keep merged-away parts 10 minutes (undo a merge broken during a storage outage)",
        tuple(
            f"ALTER TABLE {{db}}.{table} MODIFY SETTING old_parts_lifetime = 600"
            for table in TABLES
        ),
    ),
)

MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        5,
        "the TLS client certificate a decision's request came with (mutual TLS)",
        ("ALTER TABLE {db}.audit_decisions ADD COLUMN IF NOT EXISTS client_cert Nullable(String)",),
    ),
)

# The materialized view's ``*`` was expanded when it was made: it is made again to hold the
# new columns in ``events_by_id``'s rows (the audit trail reads them there).
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        6,
        "each event's W3C trace context: the trace and the worker span that signed it",
        (
            "ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS trace_id String DEFAULT ''",
            "ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS span_id String DEFAULT ''",
            "DROP VIEW IF EXISTS {db}.events_by_id_mv",
            EVENTS_BY_ID_VIEW,
        ),
    ),
)

# Tables whose TTL follows ``hot_retention_days`` (kept in step by ``migrate``).
TTL_TABLES = ("events", "events_by_id")


@dataclass
class MigrationReport:
    applied: list[int]
    already: list[int]
    ttl_changed: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "already": self.already, "ttl_changed": self.ttl_changed}


class MigrationError(RuntimeError):
    """An applied migration's text changed, or the database has versions this code lacks."""


def _render(statement: str, settings: ClickHouseSettings) -> str:
    return statement.format(
        db=settings.database,
        ttl_days=settings.hot_retention_days,
        window=settings.dedup_window_blocks,
    ).strip()


def migrate(client: Client, settings: ClickHouseSettings) -> MigrationReport:
    """Apply the migrations not yet applied; idempotent."""
    db = settings.database
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {
        int(row[0]): str(row[1])
        for row in client.query(
            f"SELECT version, checksum FROM {db}.schema_migrations FINAL"
        ).result_rows
    }
    known = {m.version for m in MIGRATIONS}
    unknown = sorted(set(done) - known)
    if unknown:
        raise MigrationError(
            f"database {db} has migrations {unknown} this version of sealstream does not know; "
            "upgrade sealstream instead of downgrading the schema"
        )
    report = MigrationReport([], [], [])
    for migration in MIGRATIONS:
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version} ({migration.name}) changed after it was "
                    "applied; add a new migration instead of editing an applied one"
                )
            report.already.append(migration.version)
            continue
        for statement in migration.statements:
            client.command(_render(statement, settings))
        client.insert(
            f"{db}.schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        report.applied.append(migration.version)
    report.ttl_changed = _sync_ttl(client, settings)
    return report


def _sync_ttl(client: Client, settings: ClickHouseSettings) -> list[str]:
    """Keep the hot tables' TTL at ``hot_retention_days`` (a setting, not a migration)."""
    changed = []
    for table in TTL_TABLES:
        engine_full = client.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} "
            "AND name = {t:String}",
            parameters={"db": settings.database, "t": table},
        ).result_rows[0][0]
        match = re.search(r"toIntervalDay\((\d+)\)", str(engine_full))
        if match and int(match.group(1)) == settings.hot_retention_days:
            continue
        client.command(
            f"ALTER TABLE {settings.database}.{table} MODIFY TTL toDateTime(occurred_at) "
            f"+ INTERVAL {settings.hot_retention_days} DAY"
        )
        changed.append(table)
    return changed


def applied_versions(client: Client, settings: ClickHouseSettings) -> list[int]:
    return sorted(
        int(r[0])
        for r in client.query(
            f"SELECT version FROM {settings.database}.schema_migrations FINAL"
        ).result_rows
    )
