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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

from producers import http, routes
from producers.dedup import ReceiptStore
from producers.errors import GatewayError
from producers.framing import Framer, PartitionWatch
from producers.kafka import AsyncProducer
from producers.limits import record_limits
from producers.metrics import Metrics
from producers.policy import PolicyStore
from producers.ratelimit import RateLimiter
from producers.receipts import ReceiptIssuer
from producers.schemabook import SchemaBook
from producers.service import IngestService
from producers.validation import EventBatchIn, EventIn
from schemas.catalog import Catalog
from sealstream.auth import AuthenticationError, BearerBackend, Keyring, TokenVerifier
from sealstream.auth.revocation import follow as follow_revocations
from sealstream.follow import TopicFollower
from sealstream.keys import load_hmac_keyring, load_receipt_signer
from sealstream.settings import (
    AuthSettings,
    GatewaySettings,
    KafkaSettings,
    KeySettings,
    RegistrySettings,
)
from sealstream.topics import partition_count
from sealstream.tracing import Tracing

log = logging.getLogger("sealstream.gateway")


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
    # keeps the framer's partition count current (None: frames are off)
    watch: PartitionWatch | None = None
    tracing: Tracing = field(default_factory=lambda: Tracing("gateway"))

    def close(self) -> None:
        self.tracing.shutdown()  # what spans are left are exported first
        if self.watch is not None:
            self.watch.close()
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
    framer, watch = raw_framer(kafka, settings, limits.max_record_bytes)
    service = IngestService(
        settings,
        policy,
        limiter,
        producer,
        book,
        issuer,
        receipts,
        metrics,
        limits,
        framer,
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
        watch,
    )


def raw_framer(
    kafka: KafkaSettings, settings: GatewaySettings, max_record_bytes: int
) -> tuple[Framer, PartitionWatch | None]:
    """Frames of the topic's partition count, and the watch that keeps that count current;
    plain records while the topic cannot be described (they are the format frames replace,
    read by the worker alike)."""
    framer = Framer(settings.raw_topic, None, settings.frame_max_events, max_record_bytes)
    if settings.frame_max_events == 1:
        return framer, None
    watch = PartitionWatch(framer, lambda: partition_count(kafka, settings.raw_topic))
    watch.check()
    if framer.partitions is None:
        log.warning("%s: one record per event until its partitions are known", framer.topic)
    return framer, watch


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
EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
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
}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
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


def _count_auth_failure(conn: HTTPConnection, error: AuthenticationError) -> None:
    gateway = conn.app.state.gateway
    if gateway is not None:
        gateway.metrics.auth_failures.labels(error.code).inc()


def _refused(conn: HTTPConnection, error: Exception) -> Response:
    """A token the shared backend refused (its ``on_error``), or a route's ``token_missing``."""
    assert isinstance(error, AuthenticationError)
    _count_auth_failure(conn, error)
    return http.error_response(error, http.context(conn))


async def _gateway_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, GatewayError | AuthenticationError)
    if isinstance(error, AuthenticationError):
        return _refused(request, error)
    return http.error_response(error, http.context(request))


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(p) for p in first.get("loc", ()))
    refused = GatewayError(str(first.get("msg")), code="invalid_request", field=field)
    return http.json_response(422, refused.body())


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    body = {"error": {"code": code, "message": str(error.detail)}}
    return http.json_response(error.status_code, body, getattr(error, "headers", None))


async def _receipt(event_id: str, request: Request) -> Response:
    """The receipt of an accepted event (the path parameter, for the OpenAPI document)."""
    return await routes.receipt(request)


def create_app(gateway: Gateway | None = None, **settings: Any) -> FastAPI:
    """The ASGI app. Without ``gateway`` it builds one from the environment at start-up."""
    app = FastAPI(
        title="Sealstream ingest gateway",
        version="1",
        description="Publish events; every accepted event gets a signed receipt.",
        lifespan=_lifespan,
        **settings,
    )
    app.state.gateway = gateway
    app.add_middleware(
        AuthenticationMiddleware,
        backend=BearerBackend(lambda: app.state.gateway.verifier),
        on_error=_refused,
    )
    app.add_middleware(http.LogContext)  # outermost: the request's ids on every log line
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(AuthenticationError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_api_route(
        "/v1/events",
        routes.publish,
        methods=["POST"],
        status_code=202,
        summary="Publish one event or a batch",
        openapi_extra=EVENTS_BODY,
        responses=EVENTS_RESPONSES,
    )
    app.add_api_route("/v1/receipts/{event_id}", _receipt, summary="The receipt of an event")
    app.add_api_route("/healthz", routes.healthz, summary="The process is alive")
    app.add_api_route("/readyz", routes.readyz, summary="Kafka and the registry are reachable")
    app.add_api_route("/metrics", routes.metrics, summary="Prometheus metrics")
    app.add_api_route(
        "/.well-known/sealstream/keys", routes.keys, summary="Public keys that verify receipts"
    )
    # The hot endpoint is served by a plain Starlette route placed first: the same handler and
    # exception handlers, without FastAPI's per-request dependency solving (for an endpoint
    # that takes only the Request it still parses cookies and builds a sub-response: ~8% of
    # the gateway's CPU at batch 1 in benchmarks/results/profiles/). The APIRoute above stays
    # for the OpenAPI document.
    app.router.routes.insert(
        0, Route("/v1/events", routes.publish, methods=["POST"], include_in_schema=False)
    )
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
