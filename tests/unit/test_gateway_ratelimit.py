"""Token buckets: per tenant and per client, weighted by batch size, refused costs nothing."""

from __future__ import annotations

import asyncio
import math

from producers.errors import GatewayError
from producers.metrics import Metrics
from producers.ratelimit import RateLimiter
from producers.service import IngestService, RequestContext
from sealstream.auth import Principal
from sealstream.settings import GatewaySettings


def test_client_bucket_limits_one_client_not_its_neighbours() -> None:
    limiter = RateLimiter(tenant_rate=100, tenant_burst=100, client_rate=1, client_burst=5)
    assert all(limiter.take("acme", "a", now=0).allowed for _ in range(5))
    refused = limiter.take("acme", "a", now=0)
    assert not refused.allowed and refused.scope == "client"
    assert math.isclose(refused.retry_after_s, 1.0)
    assert limiter.take("acme", "b", now=0).allowed  # another client is unaffected
    assert limiter.take("acme", "a", now=1.0).allowed  # refilled after retry_after


def test_tenant_bucket_is_shared_by_its_clients() -> None:
    limiter = RateLimiter(tenant_rate=10, tenant_burst=10, client_rate=100, client_burst=100)
    assert limiter.take("acme", "a", cost=6, now=0).allowed
    refused = limiter.take("acme", "b", cost=6, now=0)
    assert not refused.allowed and refused.scope == "tenant"
    assert math.isclose(refused.retry_after_s, 0.2)
    assert limiter.take("globex", "b", cost=6, now=0).allowed


def test_refused_request_costs_nothing_and_oversize_never_fits() -> None:
    limiter = RateLimiter(tenant_rate=1, tenant_burst=10, client_rate=1, client_burst=10)
    assert not limiter.take("t", "c", cost=11, now=0).allowed
    assert limiter.take("t", "c", cost=11, now=0).retry_after_s == math.inf
    assert limiter.take("t", "c", cost=10, now=0).allowed


def test_tenant_override_and_headers() -> None:
    limiter = RateLimiter(tenant_rate=1, tenant_burst=1, client_rate=50, client_burst=50)
    limiter.set_tenant_limit("big", rate=20, burst=20)
    verdict = limiter.take("big", "c", cost=5, now=0)
    assert verdict.allowed and verdict.limit == 20 and verdict.remaining == 15
    assert math.isclose(verdict.reset_s, 0.25)


def test_a_body_refused_whole_costs_one_event_and_a_flood_of_them_is_429() -> None:
    """Before, a malformed body cost nothing: a client could make the gateway parse (and
    inflate) 1 MiB bodies as fast as it sent them, never slowed by its limits."""
    service = IngestService.__new__(IngestService)  # only what a refused body reaches
    service.settings = GatewaySettings()
    service.limiter = RateLimiter(tenant_rate=1, tenant_burst=3, client_rate=1, client_burst=3)
    service.metrics = Metrics()
    principal = Principal("svc", "acme", frozenset(), frozenset(), "test", None, 0, 2**31, "k1")
    ctx = RequestContext("r-1", "c-1", None, None, None)

    def send(body: bytes) -> str:
        try:
            asyncio.run(service.publish(principal, body, ctx))
        except GatewayError as error:
            return error.code
        return "accepted"

    assert [send(b'{"events": ') for _ in range(4)] == ["json_malformed"] * 3 + ["rate_limited"]
    assert send(b"[" * 100 + b"]" * 100) == "rate_limited"  # too deep: refused at the limit too
