"""The Grafana provisioning of the docker compose stack: the dashboard is a valid dashboard, its
data sources are the provisioned ones, and every ClickHouse panel's SQL runs on the real schema.

The SQL runs on the embedded engine (chDB) after ``sinks.clickhouse.migrations.migrate``, in a
child process (chDB allows one engine per process), with Grafana's macros replaced the way
Grafana would expand them for "the last day" and one tenant.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "sealstream.json"
DATASOURCES_DIR = GRAFANA / "provisioning" / "datasources"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "sealstream.yaml"
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"
TENANT = "acme"


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_FILE.read_text()))


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    """Provisioned data sources by type."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(DATASOURCES_DIR.glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert config["apiVersion"] == 1, path
        for source in config["datasources"]:
            assert source["type"] not in found, f"two {source['type']} data sources"
            found[source["type"]] = source
    return found


def compose_services() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def clickhouse_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Panel title -> rawSql of each ClickHouse target."""
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == CLICKHOUSE_PLUGIN:
                queries[f"{panel['title']} [{target['refId']}]"] = target["rawSql"]
    return queries


def expand(sql: str, tenant: str = TENANT) -> str:
    """Grafana's expansion of the macros the dashboard uses, for the last day and one tenant."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= now() - INTERVAL 1 DAY", sql)
    literal = "'" + tenant.replace("'", "\\'") + "'"
    for form in ("'${tenant}'", "'$tenant'", "${tenant:singlequote}", "${tenant}", "$tenant"):
        sql = sql.replace(form, literal)
    assert "$" not in sql, f"a macro or variable left unexpanded: {sql}"
    return sql


def test_the_dashboard_is_a_dashboard() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"] == "Sealstream"
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard.get("id") is None, "a provisioned dashboard has no database id"
    panels = dashboard["panels"]
    assert len(panels) >= 6
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    for panel in panels:
        assert panel["type"] in {"timeseries", "table", "stat", "barchart"}, panel["title"]
        assert panel["title"] and panel["targets"], panel
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "tenant" in variables
    tenant = variables["tenant"]
    assert tenant["type"] == "query" and tenant["datasource"]["type"] == CLICKHOUSE_PLUGIN
    # every ClickHouse panel filters by the tenant and the dashboard's time range
    queries = clickhouse_queries(dashboard)
    assert len(queries) >= 6
    for title, sql in queries.items():
        assert "$__timeFilter(" in sql, title
        assert "${tenant:singlequote}" in sql or "$tenant" in sql, title
    prometheus = [
        t for p in panels for t in p["targets"] if t["datasource"]["type"] == "prometheus"
    ]
    assert prometheus and any(
        "sealstream_gateway_events_accepted_total" in t["expr"] for t in prometheus
    )


def test_the_panels_use_the_provisioned_data_sources() -> None:
    dashboard = load_dashboard()
    sources = provisioned_datasources()
    assert set(sources) == {CLICKHOUSE_PLUGIN, "prometheus"}
    uids = {kind: source["uid"] for kind, source in sources.items()}
    refs = [dashboard["templating"]["list"][0]["datasource"]]
    for panel in dashboard["panels"]:
        refs.append(panel["datasource"])
        refs.extend(t["datasource"] for t in panel["targets"])
    for ref in refs:
        assert ref["uid"] == uids[ref["type"]], ref
    assert {ref["type"] for ref in refs} == set(uids)


def test_the_data_sources_reach_the_compose_services() -> None:
    services = compose_services()
    sources = provisioned_datasources()
    clickhouse = sources[CLICKHOUSE_PLUGIN]["jsonData"]
    env = services["clickhouse"]["environment"]
    assert clickhouse["host"] == "clickhouse" and clickhouse["port"] == 8123
    assert clickhouse["protocol"] == "http"
    sink = services["sink-clickhouse"]["environment"]
    # Grafana reads as the read-only analyst the sink makes, not as the sink's own user
    from sealstream.settings import ClickHouseSettings
    from sinks.clickhouse.roles import GRAFANA, access_statements, tenant_role

    assert clickhouse["username"] == GRAFANA != env["CLICKHOUSE_USER"]
    password = sources[CLICKHOUSE_PLUGIN]["secureJsonData"]["password"]
    assert password == sink["SEALSTREAM_CLICKHOUSE_ACCESS_GRAFANA_PASSWORD"]
    assert password != env["CLICKHOUSE_PASSWORD"]
    tenant = sink["SEALSTREAM_CLICKHOUSE_ACCESS_GRAFANA_TENANT"]
    ddl = access_statements(ClickHouseSettings(), [tenant], password, tenant)
    assert f"GRANT {tenant_role(tenant)} TO {GRAFANA}" in ddl
    assert not [s for s in ddl if GRAFANA in s and ("INSERT" in s or "sealstream_writer" in s)]
    assert clickhouse["defaultDatabase"] == sink.get("SEALSTREAM_CLICKHOUSE_DATABASE", "sealstream")
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]

    grafana = services["grafana"]
    assert grafana["environment"]["GF_INSTALL_PLUGINS"].startswith(CLICKHOUSE_PLUGIN)
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if ":ro" in v)
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(PROVIDER_FILE.read_text())["providers"][0]
    assert provider["type"] == "file"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert (
        grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        == f"{provider['options']['path']}/{DASHBOARD_FILE.name}"
    )


def test_expand_replaces_every_form_and_refuses_leftovers() -> None:
    sql = "WHERE $__timeFilter(minute) AND tenant IN (${tenant:singlequote}) AND t = '$tenant'"
    assert expand(sql, "o'brien") == (
        "WHERE minute >= now() - INTERVAL 1 DAY AND tenant IN ('o\\'brien') AND t = 'o\\'brien'"
    )
    with pytest.raises(AssertionError, match="unexpanded"):
        expand("WHERE $__timeFilter(minute) AND $__interval_s > 0")


# Migrate, insert a few rows into the base tables (the materialized views fill the rollups), run
# each query; prints {"name": {"columns": [...], "rows": [...]}} or {"name": {"error": "..."}}.
RUN_SCRIPT = """
import json, sys
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import migrate
settings = ClickHouseSettings(embedded_dir=sys.argv[1])
client = connect(settings)
migrate(client, settings)
db = settings.database
events = [("e1", "acme", "page_view", 100), ("e2", "acme", "page_view", 200),
          ("e3", "acme", "order_placed", 300), ("e4", "globex", "page_view", 50)]
client.command(
    f"INSERT INTO {db}.events (event_id, tenant, event_type, occurred_at, received_at, bytes) "
    "VALUES " + ", ".join(
        f"('{e}', '{t}', '{k}', now64(3) - INTERVAL 5 SECOND, now64(3) - INTERVAL 2 SECOND, {b})"
        for e, t, k, b in events))
client.command(
    f"INSERT INTO {db}.dead_letters (failed_at, reason, stage, tenant, event_type, bytes) VALUES "
    "(now64(3), 'schema_unknown', 'decode', 'acme', 'page_view', 10), "
    "(now64(3), 'policy_denied', 'authorize', 'acme', 'page_view', 20), "
    "(now64(3), 'schema_unknown', 'decode', 'globex', 'page_view', 30)")
client.command(
    f"INSERT INTO {db}.audit_decisions (decided_at, tenant, action, decision, reason_code, "
    "request_id) VALUES "
    "(now64(3), 'acme', 'events:write', 'ALLOW', 'ok', 'r1'), "
    "(now64(3), 'acme', 'events:write', 'DENY', 'tenant_mismatch', 'r2'), "
    "(now64(3), 'globex', 'events:write', 'ALLOW', 'ok', 'r3')")
out = {}
for name, sql in json.loads(open(sys.argv[2]).read()).items():
    try:
        result = client.query(sql)
        out[name] = {"columns": list(result.column_names),
                     "rows": json.loads(json.dumps(result.result_rows, default=str))}
    except Exception as exc:
        out[name] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
"""


def run_on_the_schema(tmp_path: Path, queries: dict[str, str]) -> dict[str, Any]:
    (tmp_path / "queries.json").write_text(json.dumps(queries))
    out = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(tmp_path / "ch"), str(tmp_path / "queries.json")],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def column(result: dict[str, Any], name: str) -> list[Any]:
    index = result["columns"].index(name)
    return [row[index] for row in result["rows"]]


def test_every_clickhouse_panel_query_runs_on_the_migrated_schema(tmp_path: Path) -> None:
    dashboard = load_dashboard()
    queries = {title: expand(sql) for title, sql in clickhouse_queries(dashboard).items()}
    variable = dashboard["templating"]["list"][0]
    queries["$tenant variable"] = variable["query"]
    queries["negative control"] = "SELECT no_such_column FROM sealstream.events_minutely"
    results = run_on_the_schema(tmp_path, queries)

    assert "error" in results.pop("negative control"), "errors must be reported, not hidden"
    failed = {name: r["error"] for name, r in results.items() if "error" in r}
    assert failed == {}, failed

    assert sorted(row[0] for row in results.pop("$tenant variable")["rows"]) == ["acme", "globex"]
    by_title = {name.rsplit(" [", 1)[0]: r for name, r in results.items()}
    events = by_title["Events per minute by tenant"]
    assert set(column(events, "tenant")) == {TENANT}, "the tenant filter applies"
    assert sum(int(n) for n in column(events, "events_per_minute")) == 3
    assert events["columns"][0] == "time"
    bytes_ = by_title["Bytes per minute by tenant"]
    assert sum(int(n) for n in column(bytes_, "bytes_per_minute")) == 600
    lag = by_title["Ingest lag p50 / p95 / p99"]
    assert lag["columns"] == ["time", "p50", "p95", "p99"] and lag["rows"]
    assert all(1_000 <= float(v) < 60_000 for row in lag["rows"] for v in row[1:])
    dead = by_title["Dead letters per minute by reason"]
    assert sorted(column(dead, "reason")) == ["policy_denied", "schema_unknown"]
    assert sum(int(n) for n in column(dead, "dead_letters_per_minute")) == 2
    decisions = by_title["Authorization decisions per minute"]
    assert sorted(column(decisions, "outcome")) == ["ALLOW ok", "DENY tenant_mismatch"]
    by_reason = by_title["Authorization decisions by reason code"]
    assert sorted((r[0], r[1]) for r in by_reason["rows"]) == [
        ("ALLOW", "ok"),
        ("DENY", "tenant_mismatch"),
    ]
    # every time series starts with its time column, as the ClickHouse plugin expects
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if target["datasource"]["type"] == CLICKHOUSE_PLUGIN and target["format"] == 0:
                name = f"{panel['title']} [{target['refId']}]"
                assert results[name]["columns"][0] == "time", name
