"""The gateway's HTTP edge: what a request brings (context, body, content type) and every
answer it gets. Status codes, bodies and headers are made here and nowhere else, from the
service's typed results (``producers/results.py``) and from errors.

Answers to ``POST /v1/events``:

- one event: 202 with its receipt, or the status of its rejection with the error object;
- a batch: 202 with ``accepted`` and ``rejected`` (each with its index) if any event was
  accepted; otherwise the status every rejection shares, or 422 when they differ;
- a 503 (Kafka did not acknowledge) carries ``Retry-After``; a 429 the ``RateLimit-*``
  headers; every answer ``X-Request-ID`` and ``X-Correlation-ID``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from producers.cloudevents import BATCH, STRUCTURED
from producers.encoding import Inflater, coding_of
from producers.errors import GatewayError, RateLimited, RequestTooLarge, UnsupportedMediaType
from producers.ids import uuid7
from producers.ratelimit import Verdict
from producers.results import Accepted, Published, Rejected
from producers.service import RequestContext
from sealstream.auth import AuthenticationError
from sealstream.logs import bound

log = logging.getLogger("sealstream.gateway")

_CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")


# where a request's context is kept in its ASGI scope: made once, by the first to ask
_SCOPE_KEY = "sealstream.context"


def context(conn: HTTPConnection) -> RequestContext:
    """The request's context, made when first asked for: a new request id; the caller's
    correlation id if it is well-formed, else the same. The same for the whole request, so an
    error answered after the route began carries the request id its log lines carry."""
    found = conn.scope.get(_SCOPE_KEY)
    if found is not None:
        return found  # type: ignore[no-any-return]
    made = _new_context(conn)
    conn.scope[_SCOPE_KEY] = made
    return made


class LogContext:
    """ASGI middleware, outermost: every line the gateway logs for a request carries its
    ``request_id`` and ``correlation_id`` (and ``tenant`` once the token is verified,
    ``routes.caller``), and only that request's (sealstream/logs.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = context(HTTPConnection(scope))
        started = False

        async def sending(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with bound(request_id=ctx.request_id, correlation_id=ctx.correlation_id):
            try:
                await self.app(scope, receive, sending)
            except Exception:  # a bug: logged with the request's ids, answered with them
                log.exception("unexpected failure on %s %s", scope["method"], scope["path"])
                if started:
                    raise
                body = {"code": "internal_error", "message": "the gateway failed; retry"}
                answer = json_response(500, {**_meta(ctx), "error": body}, _ids(ctx))
                await answer(scope, receive, send)


def _new_context(conn: HTTPConnection) -> RequestContext:
    request_id = str(uuid7())
    given = conn.headers.get("x-correlation-id")
    correlation = given if given and _CORRELATION_RE.match(given) else request_id
    client = conn.client.host if conn.client else None
    agent = conn.headers.get("user-agent")
    # the ASGI TLS extension (producers/tls.py puts it there): the verified client certificate
    tls = conn.scope.get("extensions", {}).get("tls") or {}
    return RequestContext(
        request_id, correlation, client, agent[:256] if agent else None, tls.get("client_cert_name")
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit``: a chunked body has no
    Content-Length to check first, and must not be read to its end before the refusal. A body
    sent with ``Content-Encoding: gzip`` or ``zstd`` is inflated as it arrives, the limit
    applying to the inflated bytes too (producers/encoding.py)."""
    coding = coding_of(request.headers.get("content-encoding"))
    length = request.headers.get("content-length")
    if length and length.isascii() and length.isdigit() and int(length) > limit:  # not "²"
        raise RequestTooLarge(
            f"request body is {length} bytes; the limit is {limit}", code="body_too_large"
        )
    inflater = Inflater(coding, limit) if coding else None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(
                f"request body is over the limit of {limit} bytes", code="body_too_large"
            )
        if inflater is not None:
            inflater.feed(chunk)
        else:
            chunks.append(chunk)
    return inflater.finish() if inflater is not None else b"".join(chunks)


JSON_MEDIA = ("application/json", STRUCTURED, BATCH)


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON or CloudEvents JSON (form posts and text are not
    events)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not media and "ce-specversion" in request.headers:
        return  # a binary-mode CloudEvent without datacontenttype: its data is JSON
    if media not in JSON_MEDIA:
        raise UnsupportedMediaType(
            f"send the body as JSON with 'Content-Type: application/json' (or a CloudEvent as "
            f"{STRUCTURED} or {BATCH}), not {media or 'none'!r}",
            field="Content-Type",
        )


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def rate_headers(verdict: Verdict) -> dict[str, str]:
    headers = {
        "RateLimit-Limit": str(verdict.limit),
        "RateLimit-Remaining": str(verdict.remaining),
        "RateLimit-Reset": str(max(0, int(verdict.reset_s + 0.999))),
    }
    if not verdict.allowed:
        headers["Retry-After"] = _seconds(verdict.retry_after_s)
    return headers


def _seconds(wait: float) -> str:
    return "3600" if wait == float("inf") else str(max(1, int(wait + 0.999)))


def _meta(ctx: RequestContext) -> dict[str, str]:
    return {"request_id": ctx.request_id, "correlation_id": ctx.correlation_id}


def _ids(ctx: RequestContext) -> dict[str, str]:
    return {"X-Request-ID": ctx.request_id, "X-Correlation-ID": ctx.correlation_id}


def _accepted(item: Accepted) -> dict[str, Any]:
    body: dict[str, Any] = {"index": item.index, "event_id": item.event_id, "receipt": item.receipt}
    if item.duplicate:
        body["duplicate"] = True
    return body


def _rejected(item: Rejected) -> dict[str, Any]:
    body: dict[str, Any] = {"index": item.index, "status": item.status}
    if item.event_id is not None:
        body["event_id"] = item.event_id
    body["error"] = item.error_body()
    return body


def answer(result: Published, ctx: RequestContext, retry_after_s: int) -> Response:
    """The answer to ``POST /v1/events``."""
    headers = {**rate_headers(result.verdict), **_ids(ctx)}
    if not result.is_batch:
        if result.accepted:
            only = result.accepted[0]
            body = {
                **_meta(ctx),
                "event_id": only.event_id,
                "receipt": only.receipt,
                "duplicate": only.duplicate,
            }
            return json_response(202, body, headers)
        failure = result.rejected[0]
        if failure.status == 503:
            headers["Retry-After"] = str(retry_after_s)
        return json_response(failure.status, {**_meta(ctx), "error": failure.error_body()}, headers)
    status = 202
    if not result.accepted:
        statuses = {r.status for r in result.rejected}
        status = statuses.pop() if len(statuses) == 1 else 422
        if status == 503:
            headers["Retry-After"] = str(retry_after_s)
    body = {
        **_meta(ctx),
        "accepted": [_accepted(a) for a in result.accepted],
        "rejected": [_rejected(r) for r in result.rejected],
    }
    return json_response(status, body, headers)


def error_response(error: GatewayError | AuthenticationError, ctx: RequestContext) -> Response:
    """A request refused as a whole: its status, its error object, and the headers that say
    what to do (``Retry-After``, ``RateLimit-*``, ``WWW-Authenticate``)."""
    headers = _ids(ctx)
    if isinstance(error, AuthenticationError):
        body: dict[str, Any] = {"error": {"code": error.code, "message": error.message}}
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", code="{error.code}"'
        return json_response(401, {**_meta(ctx), **body}, headers)
    if isinstance(error, RateLimited) and isinstance(error.verdict, Verdict):
        headers.update(rate_headers(error.verdict))
    retry = getattr(error, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = _seconds(retry)
    return json_response(error.status, {**_meta(ctx), **error.body()}, headers)
