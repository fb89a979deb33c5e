"""Holes an attack run found in the whole pipeline (`sealstream up` on the embedded defaults):
an accepted event the worker could not sign into a record was lost; a batch whose events
occurred on 120 days stalled hot ingestion for every tenant. Here every event the gateway
answers 202 for, at and around the size limit and over 120 event days, is stored hot and
cold exactly once, the full `verify` is clean, and a row the hot store can never take goes
to the ClickHouse sink's dead letters (visible in `sealstream dlq`) while the rest flows."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.pipeline import Pipeline, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DAYS = 120


@pytest.fixture
def job(tmp_path: Path) -> Iterator[Pipeline]:
    pipe = Pipeline(
        tmp_path,
        SEALSTREAM_GATEWAY_OCCURRED_AT_MAX_AGE_S=str((DAYS + 10) * 86400),
        SEALSTREAM_CLICKHOUSE_HOT_RETENTION_DAYS="365",
    )
    try:
        pipe.start()
        yield pipe
    finally:
        pipe.stop()


def _payment(i: int, merchant: str = "m-1") -> dict[str, Any]:
    return {
        "payment_id": f"p-{i}", "account_id": f"a-{i % 7}", "amount_minor": i,
        "currency": "EUR", "status": "CAPTURED", "method": "CARD", "merchant_id": merchant,
        "payer_email": f"u{i}@example.test",
    }  # fmt: skip


def _event(i: int, occurred: dt.datetime, merchant: str = "m-1") -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_type": "payment", "tenant": "acme",
        "occurred_at": occurred.isoformat(), "payload": _payment(i, merchant),
    }  # fmt: skip


def _post(job: Pipeline, token: str, body: Any) -> httpx.Response:
    return httpx.post(
        f"{job.gateway_url}/v1/events",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=60,
    )


def _forge_unwritable_signed_record(job: Pipeline) -> str:
    """A correctly signed record straight onto events.signed whose schema_id does not fit the
    hot store's UInt32 column: ClickHouse can never take that row (routed hot only)."""
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from schemas.catalog import Catalog, subject_for
    from schemas.samples import signed_chain
    from schemas.serde import Encoder
    from sealstream.keys import load_hmac_keyring
    from sealstream.settings import KeySettings

    keys = load_hmac_keyring(KeySettings(dir=job.dir / "keys"))
    record = signed_chain(1, "forged/0", keys, routes=("hot",), tenants=("acme",))[0]
    record["schema_id"] = -5
    schema = Catalog().signed_schema()
    with SchemaRegistryClient({"url": job.settings_env["SEALSTREAM_REGISTRY_URL"]}) as client:
        found = client.lookup_schema(
            subject_for("events.signed", schema), Schema(json.dumps(schema), "AVRO")
        )
    producer = Producer(job.kafka_settings().client_config())
    headers = [("tenant", b"acme"), ("event_id", str(record["event_id"]).encode())]
    value = Encoder(int(found.schema_id), schema).encode(record)
    producer.produce("events.signed", value, headers=headers)
    assert producer.flush(30) == 0
    return str(record["event_id"])


def test_every_accepted_event_is_stored_at_the_size_limit_and_over_many_days(
    job: Pipeline,
) -> None:
    token = job.token("acme", ("publisher",), scopes=["events:write"])
    now = dt.datetime.now(dt.UTC)
    acked: set[str] = set()
    # 120 events, each on a day of its own, in one request
    days = {"events": [_event(i, now - dt.timedelta(days=i)) for i in range(DAYS)]}
    response = _post(job, token, days)
    assert response.status_code == 202, response.text[:500]
    assert len(response.json()["accepted"]) == DAYS
    acked |= {a["event_id"] for a in response.json()["accepted"]}
    # at the limit (accepted, and then carried through) and above it (refused up front)
    largest = job.cli("topics", "limits", "--json", check=False)
    limit = json.loads(largest.stdout)["max_payload_bytes"] if largest.returncode == 0 else 0
    assert limit > 100_000, largest.stdout + largest.stderr
    for size, status in ((limit - 2000, 202), (limit - 500, 202), (limit + 2000, 413)):
        response = _post(job, token, _event(1000 + size, now, "m" * size))
        assert response.status_code == status, (size, response.text[:300])
        if status == 202:
            acked.add(response.json()["event_id"])
        else:
            assert response.json()["error"]["code"] == "event_too_large"
    forged = _forge_unwritable_signed_record(job)

    def landed() -> bool:
        hot = {str(r[0]) for r in job.query("SELECT DISTINCT event_id FROM events")}
        return acked <= hot and acked <= set(job.cold_occurrences())

    wait_for(landed, 300, "every acknowledged event hot and cold")
    hot_rows = job.query("SELECT event_id, count() FROM events GROUP BY event_id")
    rollup = job.query("SELECT sum(events) FROM events_minutely WHERE tenant = 'acme'")
    assert {str(r[0]) for r in hot_rows} == acked
    assert int(rollup[0][0]) == len(acked)  # no row inserted twice
    cold = job.cold_occurrences()
    assert set(cold) == acked and max(cold.values()) == 1

    def dead_lettered() -> list[dict[str, Any]]:
        done = job.cli("dlq", "list", "--topic", "events.signed.dlq", "--json", check=False)
        return [d for d in json.loads(done.stdout or "[]") if d["event_id"] == forged]

    (letter,) = wait_for(dead_lettered, 120, "the unwritable row in the sink's dead letters")
    assert letter["reason"] == "unwritable", letter
    verified = job.cli("verify", "all", "--json", check=False)
    report = json.loads(verified.stdout.strip().splitlines()[-1])
    # everything else verifies; the row the store refused is named where it is, not lost
    findings = [(f["kind"], f["chain_id"], f["seq"]) for f in report["findings"]]
    assert findings == [("dead_lettered", "forged/0", 1)], report["findings"][:5]
    assert report["drift"] == [] and verified.returncode == 1
    assert report["checked"]["hot"] == report["checked"]["cold"] == len(acked)
