"""Stream processor parts without Kafka: masker, router, enrichers and their pipeline."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from sealstream.keys import HmacKeyring
from streams.enrich import (
    ClientAttributes,
    EnrichInput,
    EnrichmentFailed,
    PiiClassification,
    Pipeline,
    TenantDirectory,
    TimeFields,
)
from streams.mask import Masker
from streams.route import Route, RoutingTable

KEYS = HmacKeyring("m1", {"m1": b"m" * 32})
PII = {"payment": {"payer_email": "email", "card_last4": "card"}}
T0 = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def item(**event: Any) -> EnrichInput:
    base = {
        "event_type": "payment",
        "tenant": "acme",
        "occurred_at": T0,
        "received_at": T0 + dt.timedelta(milliseconds=250),
    }
    headers = event.pop("headers", {})
    return EnrichInput({**base, **event}, headers, now=T0 + dt.timedelta(seconds=2))


def test_masker_pseudonymises_consistently_within_a_tenant() -> None:
    masker = Masker(KEYS, PII)
    payload = {"payer_email": "ann@example.test", "card_last4": None, "amount_minor": 5}
    hot, masked = masker.mask("acme", "payment", payload)
    assert masked == ["payer_email"]
    assert hot["payer_email"].startswith("pii:email:") and "ann" not in hot["payer_email"]
    assert hot["card_last4"] is None and hot["amount_minor"] == 5
    assert payload["payer_email"] == "ann@example.test"  # the cold copy is untouched
    again, _ = masker.mask("acme", "payment", {"payer_email": "ann@example.test"})
    other, _ = masker.mask("globex", "payment", {"payer_email": "ann@example.test"})
    assert again["payer_email"] == hot["payer_email"] != other["payer_email"]
    assert masker.mask("acme", "login", {"x": 1}) == ({"x": 1}, [])


def test_router_rules_in_order_with_default(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "default: both\n"
        "rules:\n"
        "  - when: {classification: restricted}\n    route: cold\n"
        "  - when: {event_type: page_view, tenant: [globex, initech]}\n    route: hot\n"
    )
    table = RoutingTable.load(path)
    assert table.route("payment", "acme", "restricted") is Route.COLD
    assert table.route("page_view", "globex", "internal") is Route.HOT
    assert table.route("page_view", "acme", "internal") is Route.BOTH
    assert Route.BOTH.hot and Route.BOTH.cold and not Route.HOT.cold
    path.write_text("rules:\n  - when: {colour: red}\n    route: hot\n")
    with pytest.raises(ValueError, match="colour"):
        RoutingTable.load(path)
    assert RoutingTable.load(None).route("x", "y", "z") is Route.BOTH


def test_time_fields() -> None:
    attrs = asyncio.run(TimeFields().enrich(item()))
    assert attrs == {
        "event_date": "2026-11-22",
        "event_hour": "10",
        "ingest_lag_ms": "250",
        "processing_lag_ms": "1750",
    }
    as_millis = item(occurred_at=int(T0.timestamp() * 1000))
    assert asyncio.run(TimeFields().enrich(as_millis))["event_date"] == "2026-11-22"


def test_client_attributes() -> None:
    enrich = ClientAttributes().enrich
    public = asyncio.run(
        enrich(item(headers={"client_ip": b"8.8.8.8", "user_agent": b"Mozilla/5.0 Firefox/130"}))
    )
    assert public == {"ip_version": "4", "network": "public", "client_family": "firefox"}
    assert asyncio.run(enrich(item(headers={"client_ip": b"::1"})))["network"] == "loopback"
    assert asyncio.run(enrich(item(headers={"client_ip": b"nope"})))["network"] == "invalid"
    assert asyncio.run(enrich(item())) == {}


def test_classification() -> None:
    enricher = PiiClassification({"payment": "confidential"}, PII)
    assert asyncio.run(enricher.enrich(item())) == {
        "classification": "confidential",
        "pii_kinds": "card,email",
    }
    assert asyncio.run(enricher.enrich(item(event_type="x")))["classification"] == "internal"


def test_tenant_directory_file_reload_and_topic_records(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  acme: {region: eu, plan: gold}\n")
    directory = TenantDirectory(path, check_every_s=0)
    assert asyncio.run(directory.enrich(item())) == {
        "tenant_known": "true",
        "tenant_region": "eu",
        "tenant_plan": "gold",
    }
    path.write_text("tenants:\n  acme: {region: us}\n")
    os.utime(path, ns=(1, 10**18))
    assert asyncio.run(directory.enrich(item()))["tenant_region"] == "us"
    directory.apply_record(b"globex", b'{"region": "apac"}')
    assert asyncio.run(directory.enrich(item(tenant="globex")))["tenant_region"] == "apac"
    directory.apply_record(b"globex", None)
    assert asyncio.run(directory.enrich(item(tenant="globex"))) == {"tenant_known": "false"}


class Slow:
    name = "slow"
    timeout_s = 0.05

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        await asyncio.sleep(1)
        return {}


class Broken:
    name = "broken"
    timeout_s = 1.0

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        raise KeyError("region")


def test_pipeline_merges_and_bounds_each_enricher() -> None:
    attrs = asyncio.run(Pipeline([TimeFields(), ClientAttributes()]).run(item()))
    assert attrs["event_hour"] == "10"
    with pytest.raises(EnrichmentFailed) as slow:
        asyncio.run(Pipeline([TimeFields(), Slow()]).run(item()))
    assert (slow.value.enricher, slow.value.reason) == ("slow", "enricher_timeout")
    with pytest.raises(EnrichmentFailed) as broken:
        asyncio.run(Pipeline([Broken()]).run(item()))
    assert broken.value.reason == "enricher_error"


class WaitsAnyway:
    """Declares that it never waits (no timeout), then waits."""

    name = "liar"
    timeout_s = None

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"never": "returned"}


class ComputesOnly:
    name = "computes"
    timeout_s = None

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        return {"tenant_seen": str(item.event["tenant"])}


def test_an_enricher_without_timeout_runs_inline_and_may_not_wait() -> None:
    """timeout_s None: no timeout block; one that waits anyway fails instead of hanging."""
    assert asyncio.run(Pipeline([ComputesOnly()]).run(item()))["tenant_seen"] == "acme"
    with pytest.raises(EnrichmentFailed) as liar:
        asyncio.run(Pipeline([TimeFields(), WaitsAnyway()]).run(item()))
    assert (liar.value.enricher, liar.value.reason) == ("liar", "enricher_error")
    assert "declares timeout_s None" in str(liar.value)
