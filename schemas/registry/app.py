"""The HTTP face of the registry: Confluent Schema Registry REST API routes on Starlette.

Starlette (not FastAPI) because the API is fixed by Confluent's contract, not generated from
models; handlers are thin and map one-to-one onto :class:`Registry` methods. Blocking writes
(which wait for Kafka) run in the thread pool so reads never wait behind them.

The endpoints are declared at module level and collected in ``routes``; each finds the
registry (and the health probe) that ``build_app`` put on ``request.app.state``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ExceptionHandler

from schemas.registry.errors import InvalidRequest, RegistryError
from schemas.registry.service import Registry, parse_version

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY_BYTES = 2 * 1024 * 1024


class SRResponse(JSONResponse):
    media_type = MEDIA_TYPE


def registry_of(request: Request) -> Registry:
    """The registry this app serves (``build_app`` put it on the app's state)."""
    registry: Registry = request.app.state.registry
    return registry


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


def _int_path(request: Request, name: str) -> int:
    raw = request.path_params[name]
    try:
        return int(raw)
    except ValueError:
        raise HTTPException(404, f"HTTP 404 Not Found: '{raw}' is not a schema id") from None


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest(f"Request body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"Unexpected character in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return body


# -- endpoints --------------------------------------------------------------------------------


async def root(request: Request) -> Response:
    return SRResponse({})


async def subjects(request: Request) -> Response:
    return SRResponse(registry_of(request).subjects(_flag(request, "deleted")))


async def subject_versions(request: Request) -> Response:
    registry = registry_of(request)
    subject = request.path_params["subject"]
    if request.method == "POST":
        body = await _body(request)
        return SRResponse(await run_in_threadpool(registry.register, subject, body))
    return SRResponse(registry.versions(subject, _flag(request, "deleted")))


async def subject(request: Request) -> Response:
    registry = registry_of(request)
    name = request.path_params["subject"]
    if request.method == "POST":
        body = await _body(request)
        return SRResponse(registry.lookup(name, body, _flag(request, "deleted")))
    permanent = _flag(request, "permanent")
    return SRResponse(await run_in_threadpool(registry.delete_subject, name, permanent))


async def subject_version(request: Request) -> Response:
    registry = registry_of(request)
    name = request.path_params["subject"]
    version = parse_version(request.path_params["version"])
    if request.method == "DELETE":
        permanent = _flag(request, "permanent")
        return SRResponse(
            await run_in_threadpool(registry.delete_version, name, version, permanent)
        )
    return SRResponse(registry.get_version(name, version, _flag(request, "deleted")))


async def subject_version_schema(request: Request) -> Response:
    name = request.path_params["subject"]
    version = parse_version(request.path_params["version"])
    text = registry_of(request).get_version(name, version, _flag(request, "deleted"))["schema"]
    return Response(text, media_type=MEDIA_TYPE)


async def schema_by_id(request: Request) -> Response:
    return SRResponse({"schema": registry_of(request).schema_by_id(_int_path(request, "id"))})


async def schema_by_id_raw(request: Request) -> Response:
    text = registry_of(request).schema_by_id(_int_path(request, "id"))
    return Response(text, media_type=MEDIA_TYPE)


async def schema_subjects(request: Request) -> Response:
    sid = _int_path(request, "id")
    return SRResponse(registry_of(request).subjects_for_id(sid, _flag(request, "deleted")))


async def schema_versions(request: Request) -> Response:
    sid = _int_path(request, "id")
    return SRResponse(registry_of(request).versions_for_id(sid, _flag(request, "deleted")))


async def schema_types(request: Request) -> Response:
    return SRResponse(["AVRO"])


async def compatibility(request: Request) -> Response:
    name = request.path_params["subject"]
    raw_version = request.path_params.get("version")
    version = parse_version(raw_version) if raw_version is not None else None
    body = await _body(request)
    messages = registry_of(request).test_compatibility(name, version, body)
    result: dict[str, Any] = {"is_compatible": not messages}
    if _flag(request, "verbose"):
        result["messages"] = messages
    return SRResponse(result)


async def config(request: Request) -> Response:
    registry = registry_of(request)
    name = request.path_params.get("subject")
    if request.method == "PUT":
        body = await _body(request)
        level = await run_in_threadpool(registry.set_config, name, body)
        return SRResponse({"compatibility": level.value})
    if request.method == "DELETE":
        level = await run_in_threadpool(registry.delete_config, name)
        return SRResponse({"compatibilityLevel": level.value})
    level = registry.get_config(name, _flag(request, "defaultToGlobal"))
    return SRResponse({"compatibilityLevel": level.value})


async def mode(request: Request) -> Response:
    return SRResponse({"mode": "READWRITE"})


async def health(request: Request) -> Response:
    healthy: Callable[[], bool] = request.app.state.healthy
    ok = healthy()
    return SRResponse({"healthy": ok}, status_code=200 if ok else 503)


routes = [
    Route("/", root),
    Route("/subjects", subjects),
    Route("/subjects/{subject}", subject, methods=["POST", "DELETE"]),
    Route("/subjects/{subject}/versions", subject_versions, methods=["GET", "POST"]),
    Route("/subjects/{subject}/versions/{version}", subject_version, methods=["GET", "DELETE"]),
    Route("/subjects/{subject}/versions/{version}/schema", subject_version_schema),
    Route("/schemas/types", schema_types),
    Route("/schemas/ids/{id}", schema_by_id),
    Route("/schemas/ids/{id}/schema", schema_by_id_raw),
    Route("/schemas/ids/{id}/subjects", schema_subjects),
    Route("/schemas/ids/{id}/versions", schema_versions),
    Route("/compatibility/subjects/{subject}/versions", compatibility, methods=["POST"]),
    Route("/compatibility/subjects/{subject}/versions/{version}", compatibility, methods=["POST"]),
    Route("/config", config, methods=["GET", "PUT", "DELETE"]),
    Route("/config/{subject}", config, methods=["GET", "PUT", "DELETE"]),
    Route("/mode", mode),
    Route("/mode/{subject}", mode),
    Route("/health", health),
]


# -- errors: every one in Confluent's {"error_code", "message"} shape -------------------------


async def registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return SRResponse(exc.body(), status_code=exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = (
        exc.detail
        if exc.status_code != 404 or exc.detail != "Not Found"
        else ("HTTP 404 Not Found")
    )
    return SRResponse({"error_code": exc.status_code, "message": message}, exc.status_code)


async def server_error(request: Request, exc: Exception) -> Response:
    return SRResponse({"error_code": 50001, "message": "Error in the backend data store"}, 500)


exception_handlers: dict[Any, ExceptionHandler] = {
    RegistryError: registry_error,
    HTTPException: http_error,
    Exception: server_error,
}


def build_app(registry: Registry, healthy: Callable[[], bool] = lambda: True) -> Starlette:
    """The ASGI app serving ``registry``; ``healthy`` answers ``/health``."""
    app = Starlette(routes=routes, exception_handlers=exception_handlers)
    app.state.registry = registry
    app.state.healthy = healthy
    return app
