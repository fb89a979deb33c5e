"""The gateway's HTTP app (FastAPI on uvicorn) and its wiring.

Why FastAPI: it is Starlette (same ASGI core, same speed class) plus an OpenAPI document
generated from the pydantic models that validate the envelope, which schemathesis then tests
against; with plain Starlette we would hand-write and hand-maintain that document. The hot
endpoint reads the raw body itself (orjson, our own size and depth limits) instead of
FastAPI's body parsing, so it pays for no second parse or validation pass, and is routed
without FastAPI's dependency layer. The profiles of the gateway benchmark
(benchmarks/results/profiles/) show the per-event costs in our own code (Ed25519 receipt
signatures, Kafka produce and delivery reports, Avro encoding, validation).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from producers.auth import Keyring, Principal, TokenVerifier
from producers.dedup import ReceiptStore
from producers.errors import (
    AuthenticationError,
    AuthorizationError,
    GatewayError,
    NotFound,
    RequestTooLarge,
    UnsupportedMediaType,
)
from producers.ids import uuid7
from producers.kafka import AsyncProducer
from producers.limits import record_limits
from producers.metrics import Metrics
from producers.policy import PolicyStore
from producers.ratelimit import RateLimiter
from producers.receipts import ReceiptIssuer
from producers.revocation import follow as follow_revocations
from producers.schemabook import SchemaBook
from producers.service import IngestService, Outcome, RequestContext, error_outcome
from producers.validation import EventBatchIn, EventIn
from schemas.catalog import Catalog
from sealstream.follow import TopicFollower
from sealstream.keys import load_hmac_keyring, load_receipt_signer
from sealstream.settings import (
    AuthSettings,
    GatewaySettings,
    KafkaSettings,
    KeySettings,
    RegistrySettings,
)

log = logging.getLogger("sealstream.gateway")
_CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")


@dataclass
class Gateway:
    """Everything the routes need, built once at start-up."""

    settings: GatewaySettings
    verifier: TokenVerifier
    service: IngestService
    producer: AsyncProducer
    receipts: ReceiptStore
    issuer: ReceiptIssuer
    metrics: Metrics
    policy: PolicyStore
    followers: list[TopicFollower]
    registry_url: str

    def close(self) -> None:
        for follower in self.followers:
            follower.close()
        left = self.producer.close()
        if left:
            log.error("gateway stopped with %d unacknowledged records", left)


def build_gateway(
    settings: GatewaySettings,
    auth: AuthSettings,
    kafka: KafkaSettings,
    registry: RegistrySettings,
    keys: KeySettings,
) -> Gateway:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    keyring = Keyring.from_settings(auth)
    verifier = TokenVerifier(auth, keyring, reload=lambda: Keyring.from_settings(auth))
    policy = PolicyStore(settings.policy_file)
    limiter = RateLimiter(
        settings.tenant_rate_per_s,
        settings.tenant_burst,
        settings.client_rate_per_s,
        settings.client_burst,
    )
    for tenant, rules in policy.policy.doc.tenants.items():
        if rules.rate_per_s is not None:
            limiter.set_tenant_limit(tenant, rules.rate_per_s, rules.burst or int(rules.rate_per_s))
    producer = AsyncProducer(kafka, delivery_timeout_ms=int(settings.produce_timeout_s * 1000))
    with SchemaRegistryClient(registry.client_config()) as client:
        book = SchemaBook.load(client, Catalog(), settings.raw_topic)
    issuer = ReceiptIssuer(load_receipt_signer(keys), load_hmac_keyring(keys))
    receipts = ReceiptStore(settings.dedup_max_entries, producer, settings.receipts_topic)
    metrics = Metrics()
    followers = [
        receipts.follow(kafka),
        follow_revocations(kafka, auth, verifier.revocations),
    ]
    limits = record_limits(kafka, [settings.raw_topic, settings.signed_topic, settings.dlq_topic])
    log.info("largest event: %d bytes of records (%s)", limits.max_record_bytes, limits.topic)
    service = IngestService(
        settings, policy, limiter, producer, book, issuer, receipts, metrics, limits
    )
    return Gateway(
        settings,
        verifier,
        service,
        producer,
        receipts,
        issuer,
        metrics,
        policy,
        followers,
        registry.url,
    )


def _json(outcome: Outcome) -> Response:
    return Response(
        orjson.dumps(outcome.body),
        status_code=outcome.status,
        headers=outcome.headers,
        media_type="application/json",
    )


def _context(request: Request) -> RequestContext:
    request_id = str(uuid7())
    given = request.headers.get("x-correlation-id")
    correlation = given if given and _CORRELATION_RE.match(given) else request_id
    client = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return RequestContext(request_id, correlation, client, agent[:256] if agent else None)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit``: a chunked body has no
    Content-Length to check first, and must not be read to its end before the refusal."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise RequestTooLarge(
            f"request body is {length} bytes; the limit is {limit}", code="body_too_large"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(
                f"request body is over the limit of {limit} bytes", code="body_too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (form posts and text are not events)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(
            f"send the body as JSON with 'Content-Type: application/json', not {media or 'none'!r}",
            field="Content-Type",
        )


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationError("send 'Authorization: Bearer <JWT>'", code="token_missing")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("use the Bearer scheme", code="token_malformed")
    return token.strip()


EVENTS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/EventIn"},
                        {"$ref": "#/components/schemas/EventBatchIn"},
                    ]
                }
            }
        },
    }
}


def create_app(gateway: Gateway | None = None, **settings: Any) -> FastAPI:
    """The ASGI app. Without ``gateway`` it builds one from the environment at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.gateway is None:
            app.state.gateway = await asyncio.to_thread(
                build_gateway,
                GatewaySettings(),
                AuthSettings(),
                KafkaSettings(),
                RegistrySettings(),
                KeySettings(),
            )
        yield
        await asyncio.to_thread(app.state.gateway.close)

    app = FastAPI(
        title="Sealstream ingest gateway",
        version="1",
        description="Publish events; every accepted event gets a signed receipt.",
        lifespan=lifespan,
        **settings,
    )
    app.state.gateway = gateway

    def gw(request: Request) -> Gateway:
        return request.app.state.gateway  # type: ignore[no-any-return]

    def authenticate(request: Request) -> Principal:
        g = gw(request)
        try:
            principal = g.verifier.verify(bearer_token(request))
        except AuthenticationError as exc:
            g.metrics.auth_failures.labels(exc.code).inc()
            raise
        g.metrics.token_cache.set(len(g.verifier.cache))
        return principal

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        outcome = error_outcome(exc, _context(request))
        if exc.status == 401:
            outcome.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", code="{exc.code}"'
        return _json(outcome)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first.get("loc", ()))
        error = GatewayError(str(first.get("msg")), code="invalid_request", field=field)
        return _json(Outcome(422, error.body()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return Response(
            orjson.dumps(body),
            status_code=exc.status_code,
            media_type="application/json",
            headers=getattr(exc, "headers", None),
        )

    @app.post(
        "/v1/events",
        status_code=202,
        openapi_extra=EVENTS_BODY,
        summary="Publish one event or a batch",
        responses={
            202: {"description": "Accepted: Kafka has every accepted event; receipts inside"},
            400: {"description": "Malformed JSON"},
            401: {"description": "Authentication failed"},
            403: {"description": "Not authorized"},
            409: {"description": "An event id repeated in the batch, or known with other content"},
            413: {"description": "Body, batch or event too large"},
            415: {"description": "The body is not declared application/json"},
            422: {"description": "Validation failed"},
            429: {"description": "Rate limited"},
            503: {"description": "Kafka unavailable; retry with the same event ids"},
        },
    )
    async def publish(request: Request) -> Response:
        g = gw(request)
        started = time.perf_counter()
        ctx = _context(request)
        principal = authenticate(request)
        require_json(request)
        raw = await read_body(request, g.settings.max_body_bytes)
        outcome = await g.service.publish(principal, raw, ctx)
        outcome.headers["X-Request-ID"] = ctx.request_id
        outcome.headers["X-Correlation-ID"] = ctx.correlation_id
        g.metrics.request_seconds.labels(str(outcome.status)).observe(time.perf_counter() - started)
        return _json(outcome)

    # The hot endpoint is served by a plain Starlette route placed first: the same handler and
    # exception handlers, without FastAPI's per-request dependency solving (for an endpoint
    # that takes only the Request it still parses cookies and builds a sub-response: ~8% of
    # the gateway's CPU at batch 1 in benchmarks/results/profiles/). The APIRoute above stays
    # for the OpenAPI document.
    app.router.routes.insert(
        0, Route("/v1/events", publish, methods=["POST"], include_in_schema=False)
    )

    @app.get("/v1/receipts/{event_id}", summary="The receipt of an accepted event")
    async def receipt(event_id: str, request: Request) -> Response:
        g = gw(request)
        principal = authenticate(request)
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
        return _json(Outcome(200, found))

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Kafka and the registry are reachable")
    async def readyz(request: Request) -> Response:
        import httpx

        g = gw(request)
        kafka_ok = await asyncio.to_thread(g.producer.ready, 2.0)
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                registry_ok = (await client.get(f"{g.registry_url}/subjects")).status_code == 200
        except httpx.HTTPError:
            registry_ok = False
        receipts_ok = all(f.caught_up.is_set() for f in g.followers)
        ok = kafka_ok and registry_ok and receipts_ok
        body = {"kafka": kafka_ok, "registry": registry_ok, "state_loaded": receipts_ok}
        return _json(Outcome(200 if ok else 503, {"ready": ok, **body}))

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def metrics(request: Request) -> Response:
        return Response(
            generate_latest(gw(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @app.get("/.well-known/sealstream/keys", summary="Public keys that verify receipts")
    async def keys(request: Request) -> dict[str, Any]:
        return {"keys": [gw(request).issuer.signer.jwk()]}

    # Make the envelope models part of the OpenAPI components for the oneOf above.
    app.openapi_schema = None
    _register_models(app)
    return app


def _register_models(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (EventIn, EventBatchIn):
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in definition.pop("$defs", {}).items():
                components[name] = sub
            components[model.__name__] = definition
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
