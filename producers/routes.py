"""The gateway's endpoints, declared at module level; ``producers/app.py`` collects them.

Each takes the request, finds the gateway built at start-up on ``request.app.state``, and
answers through ``producers/http.py``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from producers import cloudevents, http
from producers.errors import AuthorizationError, NotFound
from sealstream.auth import Principal, principal_of
from sealstream.logs import bind
from sealstream.tracing import headers_of

if TYPE_CHECKING:
    from producers.app import Gateway


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def caller(request: Request) -> Principal:
    """The authenticated caller (the shared backend verified the token), or 401."""
    principal = principal_of(request)
    bind(tenant=principal.tenant)  # on the request's log lines from here on (http.LogContext)
    gateway_of(request).metrics.token_cache.set(len(gateway_of(request).verifier.cache))
    return principal


async def publish(request: Request) -> Response:
    """``POST /v1/events``: one event or a batch; 202 with a signed receipt per accepted one."""
    g = gateway_of(request)
    started = time.perf_counter()
    # the request's span, under the publisher's traceparent if it sent one; every event of
    # the request carries the span's context to the worker (sealstream/tracing.py)
    with g.tracing.span("POST /v1/events", request.headers, SpanKind.SERVER) as span:
        ctx = replace(http.context(request), trace=tuple(headers_of(span)))
        principal = caller(request)
        span.set_attribute("sealstream.tenant", principal.tenant)
        http.require_json(request)
        raw = await http.read_body(request, g.settings.max_body_bytes)
        mode = cloudevents.mode_of(request.headers.get("content-type", ""), request.headers)
        cloud = (mode, request.headers) if mode else None
        result = await g.service.publish(principal, raw, ctx, cloud)
        response = http.answer(result, ctx, g.settings.retry_after_s)
        span.set_attribute("http.response.status_code", response.status_code)
    g.metrics.request_seconds.labels(str(response.status_code)).observe(
        time.perf_counter() - started
    )
    return response


async def receipt(request: Request) -> Response:
    """``GET /v1/receipts/{event_id}``: the receipt again, the caller's tenant only."""
    g = gateway_of(request)
    principal = caller(request)
    event_id = request.path_params["event_id"]
    decision = g.policy.decide(principal, "read_receipt", None, principal.tenant)
    if not decision.allow:
        raise AuthorizationError(
            f"not authorized to read receipts ({decision.reason})", code=decision.reason.lower()
        )
    found = g.receipts.get(principal.tenant, event_id)
    if found is None:
        raise NotFound(
            f"no receipt for event {event_id!r} in tenant {principal.tenant!r}",
            code="receipt_not_found",
        )
    return http.json_response(200, found)


async def healthz(request: Request) -> Response:
    return http.json_response(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    """Kafka and the registry answer, and the receipts and revocations are loaded."""
    import httpx

    g = gateway_of(request)
    kafka_ok = await asyncio.to_thread(g.producer.ready, 2.0)
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            registry_ok = (await client.get(f"{g.registry_url}/subjects")).status_code == 200
    except httpx.HTTPError:
        registry_ok = False
    receipts_ok = all(f.caught_up.is_set() for f in g.followers)
    ok = kafka_ok and registry_ok and receipts_ok
    body = {"kafka": kafka_ok, "registry": registry_ok, "state_loaded": receipts_ok}
    return http.json_response(200 if ok else 503, {"ready": ok, **body})


async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(gateway_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


async def keys(request: Request) -> Response:
    """The public Ed25519 keys (JWKS) that verify receipts."""
    body: dict[str, Any] = {"keys": [gateway_of(request).issuer.signer.jwk()]}
    return http.json_response(200, body)
