"""Typed settings for every Sealstream component, read from the environment once.

Each component has one pydantic-settings model; the entry point (the CLI) loads it and
passes it down, so constructors never read the environment themselves. Variables are
prefixed ``SEALSTREAM_``; the two conventional names ``KAFKA_BOOTSTRAP`` and
``SCHEMA_REGISTRY_URL`` are accepted as aliases so tests and tools can point at an
existing stack.

librdkafka configuration is built from :class:`KafkaSettings` by :meth:`KafkaSettings.client_config`
rather than passed around as hand-typed dotted strings, so a typo fails at start-up.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_REGISTRY_PORT = 18081
LOCALHOST = "127.0.0.1"


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class TopicSettings(BaseSettings):
    """Every Kafka topic the pipeline uses, by its role: the one contract between the stages
    (``SEALSTREAM_TOPIC_*``). Topic creation (``sealstream topics create``, the local stack),
    schema registration (subjects are ``<topic>-<record name>``) and every component take
    their names from here, so renaming a topic renames it everywhere at once. A component's
    own ``*_topic`` setting overrides its default (tests give each case topics of its own)."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_TOPIC_", extra="ignore")

    raw: str = Field(default="events.raw", description="Validated events from the gateway.")
    signed: str = Field(default="events.signed", description="Signed, chained events.")
    raw_dlq: str = Field(default="events.raw.dlq", description="What the workers could not sign.")
    signed_dlq: str = Field(default="events.signed.dlq", description="What a sink could not store.")
    decisions: str = Field(default="audit.decisions", description="Every allow/deny decision.")
    checkpoints: str = Field(default="audit.checkpoints", description="Signed chain heads.")
    receipts: str = Field(default="receipts", description="Receipts by event id (compacted).")
    revocations: str = Field(default="tokens.revoked", description="Revoked tokens (compacted).")
    dlq_replays: str = Field(default="dlq.replays", description="Dead letters replayed/purged.")
    tenants: str = Field(default="tenants.directory", description="Tenant attributes.")
    schemas: str = Field(default="_schemas", description="The schema registry's state.")


def _topic(role: str) -> Any:
    """A component's default for the topic of ``role``: the one in TopicSettings."""
    return Field(default_factory=lambda: getattr(TopicSettings(), role))


class KafkaSettings(BaseSettings):
    """How every component reaches the Kafka cluster."""

    model_config = SettingsConfigDict(
        env_prefix="SEALSTREAM_KAFKA_", extra="ignore", populate_by_name=True
    )

    bootstrap_servers: str = Field(
        default=f"{LOCALHOST}:{DEFAULT_KAFKA_PORT}",
        validation_alias=AliasChoices("SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP"),
        description="Comma-separated host:port list of brokers.",
    )
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = Field(default=None, description="Owner-only password file.")
    ssl_ca_location: Path | None = None
    replication_factor: int = Field(default=1, ge=1, description="For topics the stack creates.")
    client_id: str = "sealstream"

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration common to producers, consumers and admin clients.
        ``overrides`` use Python names (``enable_idempotence=True``) and become dotted keys
        (``enable.idempotence``): call sites typo-checked by keyword review, secrets kept in
        :class:`SecretStr` until this point."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.value,
            "client.id": self.client_id,
            "logger": logging.getLogger("librdkafka"),  # not raw text on stderr: logs.py
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        elif self.sasl_password_file is not None:
            from sealstream.keys import read_private

            config["sasl.password"] = read_private(self.sasl_password_file).decode().strip()
        if self.ssl_ca_location is not None:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        for key, value in overrides.items():
            config[key.replace("_", ".")] = value
        return config


class RegistrySettings(BaseSettings):
    """Where clients find the schema registry, and how the registry server runs."""

    model_config = SettingsConfigDict(
        env_prefix="SEALSTREAM_REGISTRY_", extra="ignore", populate_by_name=True
    )

    url: str = Field(
        default=f"http://{LOCALHOST}:{DEFAULT_REGISTRY_PORT}",
        validation_alias=AliasChoices("SEALSTREAM_REGISTRY_URL", "SCHEMA_REGISTRY_URL"),
        description="Base URL clients use.",
    )
    host: str = Field(default=LOCALHOST, description="Address the registry server binds.")
    port: int = Field(default=DEFAULT_REGISTRY_PORT, ge=1, le=65535)
    topic: str = Field(
        default_factory=lambda: TopicSettings().schemas,
        description="Compacted topic holding registry state.",
    )
    default_compatibility: str = "BACKWARD"
    write_timeout_s: float = Field(default=10.0, gt=0)
    basic_auth_user_info: SecretStr | None = Field(
        default=None, description="'user:password' for registries that require it."
    )
    basic_auth_file: Path | None = Field(
        default=None, description="An owner-only file holding 'user:password' (for clients)."
    )
    users_file: Path | None = Field(
        default=None,
        description="Server: users allowed to change the registry (schemas/registry/auth.py); "
        "unset, the registry takes changes from anyone.",
    )
    auth_reads: bool = Field(default=False, description="Server: reads need credentials too.")

    def client_config(self) -> dict[str, Any]:
        """Configuration dict for confluent-kafka's ``SchemaRegistryClient``."""
        from sealstream.keys import read_private

        config: dict[str, Any] = {"url": self.url}
        if self.basic_auth_user_info is not None:
            config["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        elif self.basic_auth_file is not None:
            config["basic.auth.user.info"] = read_private(self.basic_auth_file).decode().strip()
        return config


class StackSettings(BaseSettings):
    """The local stack: where its data lives and which ports it uses."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_STACK_", extra="ignore")

    dir: Path = Field(default=Path(".sealstream"), description="Data, logs and pid files.")
    # where resolved Kafka jars are cached across stacks
    cache_dir: Path = Field(default_factory=lambda: Path(user_cache_dir("sealstream")))
    host: str = LOCALHOST
    kafka_port: int = Field(default=DEFAULT_KAFKA_PORT, ge=1, le=65535)
    controller_port: int = Field(default=DEFAULT_CONTROLLER_PORT, ge=1, le=65535)
    registry_port: int = Field(default=DEFAULT_REGISTRY_PORT, ge=1, le=65535)
    kafka_heap: str = Field(default="768m", pattern=r"^\d+[mMgG]$")
    # sasl_ssl: TLS listeners, a SASL user per role, ACLs (ops/stack/security.py)
    security: str = Field(default="sasl_ssl", pattern="^(plaintext|sasl_ssl)$")
    start_timeout_s: float = Field(default=120.0, gt=0)
    default_partitions: int = Field(default=6, ge=1)
    # Kafka brokers, each also a KRaft controller; 3 gives a replicated cluster (replication
    # factor 3, min.insync.replicas 2). Ports of brokers 2..n (JSON lists): by default the first
    # broker's + 10, + 20, ...
    brokers: int = Field(default=1, ge=1, le=5)
    more_kafka_ports: list[int] = Field(default_factory=list)
    more_controller_ports: list[int] = Field(default_factory=list)

    def _ports(self, first: int, more: list[int]) -> list[int]:
        rest = more[: self.brokers - 1]
        rest += [first + 10 * i for i in range(len(rest) + 1, self.brokers)]
        return [first, *rest]

    @property
    def kafka_ports(self) -> list[int]:
        return self._ports(self.kafka_port, self.more_kafka_ports)

    @property
    def controller_ports(self) -> list[int]:
        return self._ports(self.controller_port, self.more_controller_ports)

    @property
    def replication_factor(self) -> int:
        return min(3, self.brokers)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{port}" for port in self.kafka_ports)

    @property
    def registry_url(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

    @property
    def keys_dir(self) -> Path:
        return self.dir.resolve() / "keys"

    @property
    def registry_users_file(self) -> Path:  # the registry's users (hashed), made on first start
        return self.keys_dir / "registry-users.json"

    @property
    def registry_operator_file(self) -> Path:  # operator:<password>, may change the registry
        return self.keys_dir / "registry-operator.secret"

    def kafka_settings(self, user: str = "admin") -> KafkaSettings:
        """Client settings pointing at this stack's brokers (as ``user`` when it is secured)."""
        if self.security == "sasl_ssl":
            from sealstream.principals import client_settings

            return client_settings(self, user)
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers, replication_factor=self.replication_factor
        )

    def registry_settings(self) -> RegistrySettings:
        """Registry settings for the registry server this stack runs, with the operator's
        credential (the one that may register schemas)."""
        return RegistrySettings(
            url=self.registry_url,
            host=self.host,
            port=self.registry_port,
            basic_auth_file=self.registry_operator_file,
            users_file=self.registry_users_file,
        )


class AuthSettings(BaseSettings):
    """How the gateway authenticates bearer JWTs."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_AUTH_", extra="ignore")

    issuer: str = Field(default="sealstream-dev", description="Required `iss`, compared exactly.")
    audience: str = Field(default="sealstream-gateway", description="Required `aud` member.")
    hs256_keys: SecretStr | None = Field(
        default=None,
        description='HS256 keyring as JSON: {"active": kid, "keys": {kid: secret}}. '
        "Secrets are UTF-8 text or 'base64:...'; each at least 32 bytes.",
    )
    hs256_keys_file: Path | None = Field(default=None, description="The same JSON in a file.")
    jwks_file: Path | None = Field(
        default=None,
        description="Local JWKS with RS256/ES256/EdDSA public keys (each with kid, alg).",
    )
    leeway_s: int = Field(default=30, ge=0, le=300)
    max_token_bytes: int = Field(default=8192, ge=256)
    max_lifetime_s: int = Field(default=24 * 3600, ge=60, description="Longest exp - iat accepted.")
    allowed_typ: list[str] = Field(default_factory=lambda: ["JWT", "at+jwt"])
    cache_size: int = Field(default=100_000, ge=0, description="Verified tokens kept; 0 disables.")
    revocation_topic: str = _topic("revocations")


class KeySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_KEYS_", extra="ignore")

    dir: Path = Field(default=Path(".sealstream/keys"), description="Key files (see module doc).")
    hmac_keys: SecretStr | None = Field(
        default=None, description="HMAC keyring JSON; overrides <dir>/hmac.json."
    )
    generate: bool = Field(
        default=True, description="Create missing key files (local stack); off in production."
    )


class GatewaySettings(BaseSettings):
    """The ingest gateway: limits, topics, policy."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_GATEWAY_", extra="ignore")

    host: str = LOCALHOST
    port: int = Field(default=18080, ge=1, le=65535)
    # HTTPS with tls_cert_file/tls_key_file (PEM; the key owner-only), or when they are unset
    # the local stack's own certificate (issued by its CA, <keys dir>/tls/ca.pem); mutual TLS
    # with tls_client_ca_file: a client certificate signed by it is required, its subject audited
    tls: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_events_per_batch: int = Field(default=500, ge=1)
    max_json_depth: int = Field(default=32, ge=2)
    tenant_rate_per_s: float = Field(default=2000.0, gt=0)
    tenant_burst: int = Field(default=4000, ge=1)
    client_rate_per_s: float = Field(default=1000.0, gt=0)
    client_burst: int = Field(default=2000, ge=1)
    policy_file: Path = Path("config/policy.yaml")
    produce_timeout_s: float = Field(default=10.0, gt=0, description="Wait for Kafka, then 503.")
    retry_after_s: int = Field(default=5, ge=1)
    dedup_max_entries: int = Field(default=1_000_000, ge=0)
    frame_max_events: int = Field(
        default=100,
        ge=1,
        description="Events per events.raw record: a request's events of one partition go in "
        "one frame of at most this many (schemas/frames.py); 1 writes one plain record per "
        "event, as before frames. 100 already spreads the worker's per-message cost over "
        "100 events, and bounds how long a rebalance waits for the frame in hand.",
    )
    occurred_at_max_age_s: float = Field(
        default=30 * 86400.0,
        gt=0,
        description="How long before the gateway's clock an occurred_at may be (default 30 days, "
        "the hot store's default retention).",
    )
    occurred_at_max_ahead_s: float = Field(
        default=3600.0, ge=0, description="How far after the gateway's clock (clock skew)."
    )
    raw_topic: str = _topic("raw")
    decisions_topic: str = _topic("decisions")
    receipts_topic: str = _topic("receipts")
    # the topics an accepted event is later written to: the largest event the gateway accepts is
    # derived from their max.message.bytes (producers/limits.py)
    signed_topic: str = _topic("signed")
    dlq_topic: str = _topic("raw_dlq")


class WorkerSettings(BaseSettings):
    """The stream processors (faust workers)."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_WORKER_", extra="ignore")

    app_id: str = "sealstream-processor"
    raw_topic: str = _topic("raw")
    signed_topic: str = _topic("signed")
    dlq_topic: str = _topic("raw_dlq")
    checkpoints_topic: str = _topic("checkpoints")
    partitions: int = Field(default=6, ge=1, description="Of events.raw and events.signed.")
    dlq_partitions: int = Field(default=3, ge=1, description="Of events.raw.dlq.")
    dlq_replays_topic: str = Field(
        default_factory=lambda: TopicSettings().dlq_replays,
        description="Compacted: which dead letters were replayed/purged.",
    )
    processing_guarantee: str = Field(
        default="exactly_once", pattern="^(exactly_once|at_least_once)$"
    )
    max_attempts: int = Field(default=4, ge=1, description="Tries for transient failures.")
    backoff_base_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)
    checkpoint_every: int = Field(
        default=500, ge=1, description="Events per chain between checkpoints, at most."
    )
    checkpoint_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="A chain's newest entries get a signed checkpoint within this many seconds, "
        "even when it goes quiet: entries after the last checkpoint could be deleted unseen.",
    )
    routes_file: Path = Path("config/routes.yaml")
    tenants_file: Path = Path("config/tenants.yaml")
    tenants_topic: str | None = Field(
        default_factory=lambda: TopicSettings().tenants,
        description="Compacted topic of tenant attributes; empty = off.",
    )
    policy_file: Path = Path("config/policy.yaml")
    data_dir: Path = Field(default=Path(".sealstream/worker"), description="faust's data dir.")
    web_port: int = Field(default=0, ge=0, le=65535, description="faust web/metrics; 0 = off.")
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus /metrics of this worker; 0 = off."
    )
    metrics_host: str = Field(default=LOCALHOST, description="Address /metrics binds.")
    session_timeout_s: float = Field(
        default=15.0,
        ge=6,
        le=300,
        description="Group session timeout: how long a killed worker's partitions stay "
        "unassigned before the others (or its restart) take them over.",
    )
    commit_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often each partition's transaction commits: signed events become "
        "readable to the sinks (read_committed) only then, so this bounds the added latency.",
    )
    producer_linger_ms: int = Field(
        default=50,
        ge=0,
        le=1000,
        description="How long output records wait to share a produce request (faust's default "
        "0 sent one tiny request per event: a quarter of the worker's time in socket writes; "
        "50 against 5 ms: 1.15x the events/s on framed input, median of 3 paired runs). The "
        "sinks see records only when the transaction commits (commit_interval_s), so this "
        "adds no visible latency beyond it.",
    )
    producer_max_batch_bytes: int = Field(
        default=256 * 1024,
        ge=16 * 1024,
        le=1_000_000,
        description="The most bytes of records the worker's producer puts in one partition's "
        "batch. A transactional producer has one request in flight per broker, so faust's "
        "16 KiB (about 10 signed records) capped the worker at a batch per round trip: 256 KiB "
        "gave 1.37x the events/s on framed input (median of 5 paired runs: 5,220 against "
        "4,004).",
    )
    heartbeat_interval_s: float = Field(
        default=2.0, gt=0, description="Group heartbeats; well under session_timeout_s."
    )
    dedup_window_s: float = Field(
        default=900.0,
        gt=0,
        description="How long a signed event id is remembered per partition: a retry the "
        "gateway produced again within it is dropped, not signed twice (streams/dedup.py).",
    )
    dedup_max_per_partition: int = Field(
        default=50_000,
        ge=0,
        description="At most this many event ids remembered per partition (about 230 bytes "
        "each, 11 MB at 50,000; rebuilt in about 0.5 s at assignment); 0 turns it off.",
    )
    fault_slow_tenant: str | None = Field(
        default=None, description="Fault drill: hang enrichment of this tenant's events."
    )


class UpSettings(BaseSettings):
    """``sealstream up``: the supervised main job and its dashboard (``SEALSTREAM_UP_*``)."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_UP_", extra="ignore")

    workers: int = Field(default=1, ge=1, le=16, description="Stream processor processes.")
    dashboard_host: str = LOCALHOST
    dashboard_port: int = Field(default=18090, ge=1, le=65535)
    worker_metrics_port: int = Field(
        default=18126, ge=1, le=65535, description="First worker's /metrics; +1 per worker."
    )
    objects_metrics_port: int = Field(default=18125, ge=1, le=65535)
    ready_timeout_s: float = Field(default=120.0, gt=0)
    demo_timeout_s: float = Field(default=180.0, gt=0)


class ClickHouseSettings(BaseSettings):
    """The hot store. ``url`` empty means the embedded engine under the stack directory
    (``chdb:///<stack dir>/clickhouse``); ``http(s)://host:port`` is a ClickHouse server."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_CLICKHOUSE_", extra="ignore")

    url: str = Field(
        default="", description="chdb:///path or http(s)://host:port; empty = embedded."
    )
    embedded_dir: Path = Field(
        default=Path(".sealstream/clickhouse"), description="Engine directory when embedded."
    )
    database: str = Field(default="sealstream", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    user: str = "default"
    password: SecretStr | None = None
    verify_tls: bool = True
    ca_cert: Path | None = None
    hot_retention_days: int = Field(default=30, ge=1, description="TTL of hot rows (event time).")
    dedup_window_blocks: int = Field(
        default=10_000, ge=100, description="Insert blocks whose tokens are remembered."
    )
    query_host: str = Field(default=LOCALHOST, description="Embedded query endpoint address.")
    query_port: int = Field(
        default=18123, ge=0, le=65535, description="Embedded query endpoint port; 0 = off."
    )
    query_max_rows: int = Field(default=100_000, ge=1)
    query_timeout_s: int = Field(default=30, ge=1)
    query_max_memory_bytes: int = Field(
        default=1024**3, ge=16 * 1024**2, description="Memory one analyst query may use."
    )
    query_max_result_bytes: int = Field(
        default=512 * 1024**2, ge=1024**2, description="Uncompressed result bytes per query."
    )
    query_max_rows_to_read: int = Field(
        default=0, ge=0, description="Rows one query may read; 0 = no limit (time bounds it)."
    )
    query_max_bytes_to_read: int = Field(
        default=0, ge=0, description="Bytes one query may read; 0 = no limit (time bounds it)."
    )
    query_max_concurrent: int = Field(
        default=4, ge=1, le=64, description="Queries the endpoint runs at once (engine handles)."
    )
    query_max_concurrent_per_tenant: int = Field(
        default=2, ge=1, le=64, description="Queries one tenant (or the auditors) runs at once."
    )
    query_queue_timeout_s: float = Field(
        default=2.0, ge=0, le=60, description="How long a query waits for a slot before 429."
    )
    query_queue_depth: int = Field(
        default=8, ge=0, le=1024, description="Queries one tenant may have waiting; more: 429."
    )
    audit_index: str = Field(
        default="",
        description="The audit trail's local index (SQLite file) kept by the ClickHouse sink; "
        "empty = next to the embedded engine directory, 'off' = read ClickHouse only.",
    )

    @property
    def audit_index_path(self) -> Path | None:
        if self.audit_index.lower() == "off":
            return None
        if self.audit_index:
            return Path(self.audit_index)
        return self.embedded_dir.with_name(f"{self.embedded_dir.name}-audit-index.sqlite3")

    @property
    def dsn(self) -> str:
        return self.url or f"chdb://{self.embedded_dir.resolve()}"

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")


class SinkSettings(BaseSettings):
    """How both sinks consume and batch (``SEALSTREAM_SINK_*``)."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_SINK_", extra="ignore")

    signed_topic: str = _topic("signed")
    decisions_topic: str = _topic("decisions")
    dlq_topic: str = _topic("raw_dlq")
    checkpoints_topic: str = _topic("checkpoints")
    receipts_topic: str = _topic("receipts")
    replays_topic: str = Field(
        default_factory=lambda: TopicSettings().dlq_replays,
        description="Dead-letter replay markers, for the audit trail.",
    )
    dead_letter_topic: str = Field(
        default_factory=lambda: TopicSettings().signed_dlq,
        description="Records a sink cannot decode or convert.",
    )
    clickhouse_group: str = "sealstream-sink-clickhouse"
    objects_group: str = "sealstream-sink-objects"
    clickhouse_max_records: int = Field(default=20_000, ge=1)
    clickhouse_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    clickhouse_max_age_s: float = Field(default=1.0, gt=0)
    objects_max_records: int = Field(default=50_000, ge=1)
    objects_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    objects_max_age_s: float = Field(default=30.0, gt=0)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=15.0, gt=0)
    instance_id: str | None = Field(
        default=None,
        description="Static group membership id: a restarted sink takes its partitions back "
        "at once instead of after the session timeout. Unique per running sink.",
    )
    session_timeout_ms: int = Field(default=10_000, ge=6000)
    metrics_host: str = Field(default=LOCALHOST, description="Address /metrics binds.")
    clickhouse_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Prometheus /metrics of the ClickHouse sink; 0 = off.",
    )
    objects_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus /metrics of the object sink; 0 = off."
    )
    deduplicate: bool = Field(
        default=True,
        description="ClickHouse insert deduplication; off only as the negative control in tests.",
    )
    fault_crash_point: str = Field(
        default="",
        pattern="^(|before_write|after_write)$",
        description="Fault drill: SIGKILL the sink around its Nth write (tests).",
    )
    fault_crash_after: int = Field(default=1, ge=1, description="Which write the drill kills at.")
    fault_crash_topic: str = Field(
        default="", description="Fault drill: count only writes of this topic ('' = all)."
    )
    fault_crash_once: Path | None = Field(
        default=None,
        description="Fault drill: crash only if <this>.<sink> does not exist (created first), "
        "so a supervised sink crashes once, not at every start.",
    )


class ObjectStoreSettings(BaseSettings):
    """The cold store: a local directory or an S3-compatible bucket."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_OBJECTS_", extra="ignore")

    url: str = Field(
        default=".sealstream/objects",
        description="A directory (or file:///dir) or s3://bucket[/prefix].",
    )
    endpoint: str | None = Field(default=None, description="S3 API endpoint (MinIO, Ceph, ...).")
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    path_style: bool = Field(default=True, description="Path-style requests (MinIO wants it).")
    allow_http: bool = Field(default=False, description="Allow a plain-http endpoint.")
    prefix: str = Field(default="events", description="Key prefix under the bucket/directory.")
    codec: str = Field(default="deflate", pattern="^(null|deflate|snappy|zstandard|bzip2|xz)$")
    retention_file: Path = Path("config/retention.yaml")
