"""ClickHouse server access (sinks/clickhouse/roles.py): the DDL that migrate applies. chDB
refuses access-management statements, so they are checked here as text, and on chDB only that
it refuses them instead of silently ignoring them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.query import ANALYST_TABLES, OPERATOR_TABLES
from sinks.clickhouse.roles import (
    ANALYST,
    AUDITOR,
    GRAFANA,
    POLICY_TABLES,
    WRITER,
    AccessSettings,
    access_statements,
    tenant_role,
)

SETTINGS = ClickHouseSettings(database="sealstream")


def _ddl(**kwargs: object) -> list[str]:
    return access_statements(SETTINGS, ["acme", "globex"], **kwargs)  # type: ignore[arg-type]


def test_the_analyst_reads_only_analyst_tables_readonly_within_the_query_limits() -> None:
    ddl = _ddl()
    grants = [s for s in ddl if s.startswith("GRANT SELECT ON") and s.endswith(f"TO {ANALYST}")]
    tables = {re.match(r"GRANT SELECT ON sealstream\.(\w+) ", s).group(1) for s in grants}  # type: ignore[union-attr]
    assert set(ANALYST_TABLES) <= tables
    forbidden = (
        set(OPERATOR_TABLES)
        - set(ANALYST_TABLES)
        - {"events_minutely_state", "dead_letters_minutely_state"}
    )
    assert not tables & forbidden and "receipts" in forbidden and "checkpoints" in forbidden
    profile = next(s for s in ddl if s.startswith(f"CREATE SETTINGS PROFILE OR REPLACE {ANALYST} "))
    assert "readonly = 1" in profile
    assert f"max_memory_usage = {SETTINGS.query_max_memory_bytes}" in profile
    assert f"max_execution_time = {SETTINGS.query_timeout_s}" in profile
    assert not [s for s in ddl if f"TO {ANALYST}" in s and ("INSERT" in s or "ALTER" in s)]


def test_each_tenant_role_sees_only_its_rows_in_every_table_with_a_tenant() -> None:
    ddl = _ddl()
    for tenant in ("acme", "globex"):
        role = tenant_role(tenant)
        policies = [s for s in ddl if s.startswith(f"CREATE ROW POLICY OR REPLACE {role} ")]
        assert len(policies) == len(POLICY_TABLES)
        assert all(s.endswith(f"FOR SELECT USING tenant = '{tenant}' TO {role}") for s in policies)
        assert f"GRANT {ANALYST} TO {role}" in ddl
    assert all(f"TO {WRITER}, {AUDITOR}" in s for s in ddl if "sealstream_all" in s)
    assert any(s.startswith(f"GRANT SELECT ON sealstream.* TO {AUDITOR}") for s in ddl)


def test_tenant_names_that_are_not_identifiers_are_refused_not_quoted() -> None:
    for bad in ("acme'; DROP TABLE x; --", "Acme", "a-b", "", "a" * 64):
        with pytest.raises(ValueError, match="cannot name a ClickHouse role"):
            access_statements(SETTINGS, [bad])


def test_the_grafana_user_gets_one_tenants_analyst_role_and_no_password_in_clear() -> None:
    ddl = _ddl(grafana_password="grafana-dev", grafana_tenant="acme")
    assert not [s for s in ddl if "grafana-dev" in s]
    assert f"GRANT {tenant_role('acme')} TO {GRAFANA}" in ddl
    assert f"ALTER USER {GRAFANA} DEFAULT ROLE {tenant_role('acme')}" in ddl
    with pytest.raises(ValueError, match="not a tenant"):
        _ddl(grafana_password="x", grafana_tenant="initech")
    assert not [s for s in _ddl() if GRAFANA in s]  # no password: no user


def test_tenants_come_from_the_tenant_directory(tmp_path: Path) -> None:
    assert AccessSettings().tenants() == ["acme", "globex", "initech"]
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  zeta: {}\n  alpha: {}\n")
    assert AccessSettings(tenants_file=path).tenants() == ["alpha", "zeta"]


def test_the_embedded_engine_refuses_access_management_instead_of_ignoring_it() -> None:
    import chdb

    session = chdb.session.Session()
    try:
        with pytest.raises(Exception, match=r"ACCESS_DENIED|Not enough privileges"):
            session.query(f"CREATE ROLE IF NOT EXISTS {WRITER}")
    finally:
        session.close()
