"""Who may do what on a ClickHouse server: roles, settings profiles, row policies, users.

``sealstream clickhouse migrate`` against a server applies :func:`access_statements` after the
schema (the embedded engine has no access control: chDB refuses these statements, and its
query endpoint is the guard there, ``sinks/clickhouse/query.py``):

- ``sealstream_writer``: the sink's rights in the database (insert, read, the DDL migrations
  run); the connecting user should have this role and nothing else.
- ``sealstream_analyst``: SELECT on the analyst tables only (never ``receipts``,
  ``checkpoints``, ``dlq_replays``, ``schema_migrations``), with the ``sealstream_analyst``
  profile (``readonly = 1`` and the query endpoint's memory, time and result limits). It sees
  no rows by itself: ``sealstream_analyst_<tenant>`` adds a row policy per table that lets
  through only that tenant's rows. Give an analyst's user that role.
- ``sealstream_auditor``: SELECT on every table, every tenant, ``readonly = 1``.
- ``SEALSTREAM_CLICKHOUSE_ACCESS_GRAFANA_PASSWORD`` set: a user ``sealstream_grafana`` with the
  analyst role of ``..._GRAFANA_TENANT`` (docker-compose's Grafana reads as it).

Row policies are restrictive per role; the writer and the auditor get a policy that lets every
row through, so that a table with policies still shows them all.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sealstream.settings import ClickHouseSettings


class AccessSettings(BaseSettings):
    """What ``migrate`` grants on a server (``SEALSTREAM_CLICKHOUSE_ACCESS_*``)."""

    model_config = SettingsConfigDict(env_prefix="SEALSTREAM_CLICKHOUSE_ACCESS_", extra="ignore")

    tenants_file: Path = Field(
        default=Path("config/tenants.yaml"), description="One analyst role per tenant in it."
    )
    grafana_password: SecretStr | None = None
    grafana_tenant: str = "acme"

    def tenants(self) -> list[str]:
        doc = yaml.safe_load(self.tenants_file.read_text()) or {}
        return sorted(doc.get("tenants") or {})


# the analyst tables and the tables their views read (a view runs with the reader's rights)
ANALYST_READS = (
    "events", "events_minutely", "events_minutely_state",
    "dead_letters", "dead_letters_minutely", "dead_letters_minutely_state", "audit_decisions",
)  # fmt: skip
POLICY_TABLES = (
    "events", "events_minutely_state", "dead_letters", "dead_letters_minutely_state",
    "audit_decisions",
)  # fmt: skip
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
WRITER, ANALYST, AUDITOR, GRAFANA = (
    "sealstream_writer", "sealstream_analyst", "sealstream_auditor", "sealstream_grafana",
)  # fmt: skip


def tenant_role(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise ValueError(
            f"tenant {tenant!r} cannot name a ClickHouse role: use lowercase letters, digits, '_'"
        )
    return f"{ANALYST}_{tenant}"


def access_statements(
    settings: ClickHouseSettings,
    tenants: list[str],
    grafana_password: str | None = None,
    grafana_tenant: str | None = None,
) -> list[str]:
    """The DDL, idempotent (``IF NOT EXISTS`` / ``OR REPLACE``), in the order it must run."""
    db = settings.database
    limits = (
        f"readonly = 1, max_memory_usage = {settings.query_max_memory_bytes}, "
        f"max_execution_time = {settings.query_timeout_s}, "
        f"max_result_rows = {settings.query_max_rows}, result_overflow_mode = 'throw'"
    )
    out = [
        f"CREATE SETTINGS PROFILE OR REPLACE {ANALYST} SETTINGS {limits}",
        f"CREATE SETTINGS PROFILE OR REPLACE {AUDITOR} SETTINGS readonly = 1",
        f"CREATE ROLE IF NOT EXISTS {WRITER}",
        f"GRANT SELECT, INSERT, ALTER, CREATE TABLE, CREATE VIEW, OPTIMIZE ON {db}.* TO {WRITER}",
        f"CREATE ROLE OR REPLACE {ANALYST} SETTINGS PROFILE '{ANALYST}'",
        *(f"GRANT SELECT ON {db}.{table} TO {ANALYST}" for table in ANALYST_READS),
        f"CREATE ROLE OR REPLACE {AUDITOR} SETTINGS PROFILE '{AUDITOR}'",
        f"GRANT SELECT ON {db}.* TO {AUDITOR}",
    ]
    for table in POLICY_TABLES:
        out.append(
            f"CREATE ROW POLICY OR REPLACE sealstream_all ON {db}.{table} "
            f"FOR SELECT USING 1 TO {WRITER}, {AUDITOR}"
        )
    for tenant in sorted(set(tenants)):
        role = tenant_role(tenant)
        out += [f"CREATE ROLE IF NOT EXISTS {role}", f"GRANT {ANALYST} TO {role}"]
        out += [
            f"CREATE ROW POLICY OR REPLACE {role} ON {db}.{table} "
            f"FOR SELECT USING tenant = '{tenant}' TO {role}"
            for table in POLICY_TABLES
        ]
    if grafana_password:
        if grafana_tenant not in tenants:
            raise ValueError(f"the Grafana user's tenant {grafana_tenant!r} is not a tenant")
        digest = hashlib.sha256(grafana_password.encode()).hexdigest()
        role = tenant_role(str(grafana_tenant))
        out += [
            f"CREATE USER OR REPLACE {GRAFANA} IDENTIFIED WITH sha256_hash BY '{digest}'",
            f"GRANT {role} TO {GRAFANA}",
            f"ALTER USER {GRAFANA} DEFAULT ROLE {role}",
        ]
    return out


def apply_access(client: object, settings: ClickHouseSettings, access: AccessSettings) -> int:
    """Run the statements on a server; how many ran. The connecting user needs access
    management (``CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT=1``, or ``access_management`` in
    users.xml); a server that refuses raises its error at the first statement."""
    password = access.grafana_password.get_secret_value() if access.grafana_password else None
    statements = access_statements(settings, access.tenants(), password, access.grafana_tenant)
    for statement in statements:
        client.command(statement)  # type: ignore[attr-defined]
    return len(statements)
