"""ClickHouse's HTTP interface of the ClickHouse sink's query endpoint, on the embedded engine,
with clickhouse-connect's own ``get_client``: the caller's tenant only, within the endpoint's
limits whatever the client asks, every write refused and nothing changed, every query an audit
record; and the example of docs/sinks.md runs as it is written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.integration.sinkkit import REPO, Sinks

pytestmark = pytest.mark.integration

MAX_ROWS = 50  # the endpoint's result limit in these tests: below the rows of one tenant x 2


@pytest.fixture(scope="module")
def loaded(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sinks, Counter]]:
    """A running ClickHouse sink holding two tenants' events, and each tenant's count."""
    sinks = Sinks(
        stack, tmp_path_factory.mktemp("clickhouse-http"),
        SEALSTREAM_CLICKHOUSE_QUERY_MAX_ROWS=str(MAX_ROWS),
    )  # fmt: skip
    try:
        chains = sinks.produce_signed(30)
        counts = Counter(r["tenant"] for records in chains.values() for r in records)
        assert set(counts) == {"acme", "globex"} and counts["acme"] < MAX_ROWS < 2 * counts["acme"]
        sinks.start("clickhouse")
        sinks.wait_caught_up("clickhouse")
        yield sinks, counts
    finally:
        sinks.stop_all()


def connect(sinks: Sinks, password: str, **options: Any) -> Any:
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=sinks.query_port, username="analyst", password=password, **options
    )


def test_clickhouse_connect_reads_its_tenant_only_and_cannot_write(
    loaded: tuple[Sinks, Counter],
) -> None:
    sinks, counts = loaded
    acme = connect(sinks, sinks.token("acme", ["analyst"]))
    run = uuid.uuid4().hex[:8]
    asked = acme.query(
        "SELECT tenant, count() AS n FROM events GROUP BY tenant",
        settings={"query_id": f"{run}-read"},
    )
    assert asked.result_rows == [("acme", counts["acme"])]  # globex's rows are invisible
    globex = clickhouse_connect.get_client(  # the JWT as a bearer token
        host="127.0.0.1", port=sinks.query_port, access_token=sinks.token("globex", ["analyst"])
    )
    assert globex.command("SELECT count() FROM events") == counts["globex"]
    assert globex.command("SELECT count() FROM events WHERE tenant = 'acme'") == 0

    # the endpoint's limits hold whatever the client asks; a client may ask for less
    twice = "SELECT a.event_id FROM events AS a CROSS JOIN events AS b LIMIT 100"  # > 50 rows
    for settings in ({}, {"max_result_rows": 10**9}, {"max_result_rows": 0}):
        with pytest.raises(DatabaseError) as limited:
            acme.query(twice, settings=settings)
        assert limited.value.code == 396, settings  # TOO_MANY_ROWS_OR_BYTES
    assert len(acme.query("SELECT event_id FROM events").result_rows) == counts["acme"]
    with pytest.raises(DatabaseError):
        acme.query("SELECT event_id FROM events", settings={"max_result_rows": 5})

    # writes are refused, and change nothing
    with pytest.raises(DatabaseError) as refused:
        acme.insert(
            "events", [["forged", "acme"]], column_names=["event_id", "tenant"],
            column_type_names=["String", "String"], settings={"query_id": f"{run}-insert"},
        )  # fmt: skip
    assert refused.value.code == 164 and "only SELECT queries run here" in str(refused.value)
    for statement in (
        "INSERT INTO events (event_id, tenant) VALUES ('forged', 'acme')",
        "ALTER TABLE events DELETE WHERE 1",
        "DROP TABLE events",
    ):
        with pytest.raises(DatabaseError) as refused:
            acme.command(statement)
        assert refused.value.code == 164, statement
    with pytest.raises(DatabaseError):
        acme.insert("events", [["forged", "acme"]], column_names=["event_id", "tenant"])
    assert acme.command("SELECT count() FROM events") == counts["acme"]
    assert globex.command("SELECT count() FROM events") == counts["globex"]
    assert acme.command("SELECT count() FROM events WHERE event_id = 'forged'") == 0

    # no token, a token that is not one, a token without a reading role: refused at connect
    for password, code in [
        ("", 516), ("not-a-jwt", 516), (sinks.token("acme", ["publisher"]), 497)
    ]:  # fmt: skip
        with pytest.raises(DatabaseError) as denied:
            connect(sinks, password)
        assert denied.value.code == code, password[:20]

    # every query is an audit record, written before the answer: the read and the insert
    sinks.wait_caught_up("clickhouse")
    audited = acme.query(
        "SELECT JSONExtractString(detail, 'query_id') AS q, reason_code, decision, subject, "
        "user_agent, JSONExtractString(detail, 'sql') AS sql FROM audit_decisions "
        f"WHERE action = 'query' AND startsWith(JSONExtractString(detail, 'query_id'), '{run}') "
        "ORDER BY q"
    ).named_results()
    got = {row["q"]: row for row in audited}
    assert set(got) == {f"{run}-insert", f"{run}-read"}
    read, insert = got[f"{run}-read"], got[f"{run}-insert"]
    assert (read["reason_code"], read["decision"]) == ("QUERY_OK", "ALLOW")
    assert read["subject"] == "tester"  # the token's subject, not the basic user name
    assert read["sql"] == "SELECT tenant, count() AS n FROM events GROUP BY tenant"
    assert read["user_agent"].startswith("clickhouse-connect")
    assert (insert["reason_code"], insert["decision"]) == ("QUERY_REJECTED", "DENY")
    assert insert["sql"].startswith("INSERT INTO `events`")


def test_the_example_of_the_docs_runs(loaded: tuple[Sinks, Counter]) -> None:
    sinks, counts = loaded
    text = (REPO / "docs" / "sinks.md").read_text()
    section = text.split("### ClickHouse's HTTP interface", 1)[1]
    script = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)[0]
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={
            **os.environ,
            "SEALSTREAM_CLICKHOUSE_QUERY_PORT": str(sinks.query_port),
            "ANALYST_JWT": sinks.token("acme", ["analyst"]),
        },
        cwd=Path(REPO), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == str([("acme", counts["acme"])])


def test_grafanas_client_clickhouse_go_reads_its_tenant_only_and_cannot_write(
    loaded: tuple[Sinks, Counter], tmp_path: Path
) -> None:
    """clickhouse-go over HTTP, as Grafana's ClickHouse plugin connects (clickhouse_go/main.go):
    its hello in the revision it sends, everything after in revision 0, as the hello said."""
    sinks, counts = loaded
    program = tmp_path / "clickhouse-go"
    built = subprocess.run(
        ["go", "build", "-mod=readonly", "-o", str(program), "."],
        cwd=Path(__file__).parent / "clickhouse_go", capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    done = subprocess.run(
        [str(program)],
        env={
            **os.environ,
            "CH_ADDR": f"127.0.0.1:{sinks.query_port}",
            "CH_JWT": sinks.token("acme", ["analyst"]),
        },
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    got = json.loads(done.stdout)
    assert got["failures"] is None, got["failures"]
    assert got["ping"] == "ok" and got["version"]
    assert got["counts"] == [["acme", counts["acme"]]]  # globex's rows are invisible
    assert got["series_points"] > 0
    columns = "event_id, tenant, source, masked_fields, enrichment, occurred_at, schema_id"
    first = (
        connect(sinks, sinks.token("acme", ["analyst"]))
        .query(f"SELECT {columns} FROM events ORDER BY event_id LIMIT 1")
        .result_rows[0]
    )  # the same row, as clickhouse-connect reads it
    expected = [*first[:5], first[5].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], first[6]]
    assert got["row"] == [v if not isinstance(v, tuple) else list(v) for v in expected]
    assert "sealstream.events" in got["tables"] and "sealstream.receipts" not in got["tables"]
    assert got["insert"]["code"] == 164, got["insert"]
    auditor = sinks.token("*", ["auditor"])
    stored = sinks.query("SELECT count() FROM events WHERE event_id = 'forged'", auditor)
    assert stored.json()["rows"] == [[0]]  # the refused write changed nothing
