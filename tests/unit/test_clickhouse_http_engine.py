"""ClickHouse's HTTP interface on the real embedded engine (chDB, in a child process: one engine
per process): what the engine itself would tell about other tenants' rows stays hidden, and
every refusal, however early, is an audit record with all of the query."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, base64, gzip, json, sys
import httpx
from sealstream.auth import AuthenticationError, Principal
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.client import connect
from sinks.clickhouse.endpoint import create_query_app
from sinks.clickhouse.migrations import migrate

settings = ClickHouseSettings(embedded_dir=sys.argv[1] + "/ch")
client = connect(settings)
migrate(client, settings)
rows = ", ".join(
    f"(now64(3), '{tenant}', 'query', 'ALLOW', 'ok', 'r-{tenant}-{i}', 'x')"
    for tenant, count in (("acme", 1), ("globex", 1234)) for i in range(count)
)  # one insert, one part: its granules hold both tenants' rows
client.command(f"INSERT INTO {settings.database}.audit_decisions (decided_at, tenant, action, "
               f"decision, reason_code, request_id, detail) VALUES {rows}")


def principal(tenant, roles, scopes):
    return Principal(f"sub-{tenant}", tenant, frozenset(scopes), frozenset(roles), "test", None,
                     0, 2**31, "k1")


TOKENS = {"acme": principal("acme", {"analyst"}, {"analytics:read"}),
          "ops": principal("ops", {"auditor"}, {"audit:read"})}


class Verifier:
    def verify(self, token):
        if token not in TOKENS:
            raise AuthenticationError("unknown token", code="token_invalid")
        return TOKENS[token]


audit = []
app = create_query_app(client, None, Verifier(), lambda **r: audit.append(r),
                       settings.database, 1000, 30, settings=settings)
limited = create_query_app(client, None, Verifier(), lambda **r: audit.append(r),
                           settings.database, 1000, 30,
                           settings=settings.model_copy(update={"query_max_rows_to_read": 100}))
COUNT = "SELECT count() AS n FROM audit_decisions"


def as_(token):
    return {"Authorization": "Basic " + base64.b64encode(f"u:{token}".encode()).decode()}


async def main():
    out = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        async def ask(name, method="POST", path="/", token="acme", headers=(), **kw):
            before = len(audit)
            r = await c.request(method, path, headers={**as_(token), **dict(headers)}, **kw)
            out[name] = {"status": r.status_code, "body": r.text[:3000],
                         "code": r.headers.get("x-clickhouse-exception-code"),
                         "audit": [{"reason": a["reason"], "detail": a["detail"]}
                                   for a in audit[before:]]}
        for fmt in ("JSON", "JSONCompact", "XML"):
            await ask(fmt, content=f"{COUNT} FORMAT {fmt}")
        for setting in ("max_rows_to_read", "max_bytes_to_read"):
            await ask(setting, path=f"/?{setting}=1234", content=COUNT)
        await ask("digits", path="/?max_result_rows=" + "9" * 4301, content=COUNT)
        await ask("cut", content=gzip.compress(COUNT.encode())[:-8],
                  headers={"Content-Encoding": "gzip"})
        hidden = "/*" + " " * 5000 + "*/ SELECT tenant, detail FROM audit_decisions LIMIT 1"
        await ask("long comment", token="ops", content=hidden)
        await ask("put", method="PUT", content=COUNT)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited),
                                 base_url="http://x") as c:
        for path, body in (("/", COUNT), ("/v1/query", json.dumps({"sql": COUNT}))):
            r = await c.post(path, content=body, headers={"Authorization": "Bearer acme"})
            out[f"read limit {path}"] = {"status": r.status_code, "body": r.text}
    print(json.dumps(out))


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path_factory.mktemp("clickhouse-http-engine"))],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("fmt", ["JSON", "JSONCompact", "XML"])
def test_no_format_shows_how_many_rows_the_engine_read(answers: dict[str, Any], fmt: str) -> None:
    """The engine reads whole granules before the tenant filter: 1,235 rows for acme's one.
    The JSON and XML formats would print that count as their statistics."""
    answer = answers[fmt]
    assert answer["status"] == 200 and "1" in answer["body"], answer
    assert "rows_read" not in answer["body"] and "1235" not in answer["body"], answer["body"]


@pytest.mark.parametrize("setting", ["max_rows_to_read", "max_bytes_to_read"])
def test_a_client_cannot_search_other_tenants_row_count_with_read_limits(
    answers: dict[str, Any], setting: str
) -> None:
    """Such a limit counts the same pre-filter reads: a client's own value, searched, would
    find 1,235. It is refused as a read-only user's setting is, and the refusal audited."""
    answer = answers[setting]
    assert (answer["status"], answer["code"]) == (400, "164"), answer
    assert [a["reason"] for a in answer["audit"]] == ["QUERY_REJECTED"]
    assert setting in answer["audit"][0]["detail"]["error"]


def test_every_early_refusal_is_a_clickhouse_error_and_an_audit_record(
    answers: dict[str, Any],
) -> None:
    digits, cut, put = answers["digits"], answers["cut"], answers["put"]
    assert (digits["status"], digits["code"]) == (400, "36")  # not a 503 with a traceback
    assert len(digits["body"]) < 500 and [a["reason"] for a in digits["audit"]] == [
        "QUERY_REJECTED"
    ]  # fmt: skip
    assert (cut["status"], cut["code"]) == (400, "36"), cut  # never run as a shorter query
    assert "ends early" in cut["body"] and cut["audit"][0]["reason"] == "QUERY_REJECTED"
    assert (put["status"], put["code"]) == (405, "36") and put["body"].startswith("Code: 36.")


def test_the_audit_keeps_all_of_the_query_not_a_long_comment_only(
    answers: dict[str, Any],
) -> None:
    answer = answers["long comment"]
    assert answer["status"] == 200
    (record,) = answer["audit"]
    assert record["reason"] == "QUERY_OK"
    assert record["detail"]["sql"].endswith("SELECT tenant, detail FROM audit_decisions LIMIT 1")


@pytest.mark.parametrize("path", ["/", "/v1/query"])
def test_the_endpoints_own_read_limit_tells_the_limit_not_what_was_read(
    answers: dict[str, Any], path: str
) -> None:
    answer = answers[f"read limit {path}"]
    assert answer["status"] == 400 and "max rows: 100" in answer["body"], answer
    assert "current rows" not in answer["body"] and "1.24" not in answer["body"], answer
