"""sealstream/logs.py: one logging set-up for every process, JSON lines or console, with the
context bound where the line was logged and only there."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from producers import http
from sealstream.logs import (
    FORMAT_VAR,
    LEVEL_VAR,
    LogSettingError,
    bind,
    bound,
    configure_logging,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test configures the root logger its own way; put pytest's back afterwards."""
    monkeypatch.delenv(FORMAT_VAR, raising=False)
    monkeypatch.delenv(LEVEL_VAR, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_level_logger_service_time_and_bound_context() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out, service="gateway")
    with bound(request_id="r-1", correlation_id="c-1", unset=None):
        logging.getLogger("sealstream.gateway").warning("denied %s", "acme")
    logging.getLogger("sealstream.gateway").debug("below the level")
    (line,) = lines(out)
    assert list(line)[:4] == ["timestamp", "level", "logger", "service"]  # then the context
    assert line["message"] == "denied acme"
    assert line["level"] == "warning" and line["logger"] == "sealstream.gateway"
    assert line["service"] == "gateway"
    assert line["request_id"] == "r-1" and line["correlation_id"] == "c-1"
    assert "unset" not in line  # None is not bound
    assert line["timestamp"].endswith("Z")


def test_an_exception_is_its_traceback_as_text_without_local_variables() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    password = "hunter2-not-for-logs"
    try:
        raise RuntimeError(f"bad length {len(password)}")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    (line,) = lines(out)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"] and "RuntimeError: bad length 20" in line["exception"]
    assert password not in out.getvalue()


def test_console_lines_are_for_people() -> None:
    out = io.StringIO()
    configure_logging("info", "console", out, service="worker")
    with bound(tenant="acme"):
        logging.getLogger("sealstream.worker").info("chain resumed")
    text = out.getvalue()
    assert "chain resumed" in text and "tenant=acme" in text and "service=worker" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert "\x1b[" not in text  # no colours when the stream is not a terminal


def test_console_lines_show_a_callers_control_characters_as_escapes() -> None:
    """What a caller sent (a tenant, an event type, a header) can reach a console line: an
    escape sequence there would act on the operator's terminal, a newline would forge a line,
    a bidirectional override would reorder what is shown."""
    out = io.StringIO()
    configure_logging("info", "console", out)
    with bound(tenant="acme\u202eemca", correlation_id="c\x1b]8;;http://x\x07"):
        logging.getLogger("sealstream.gateway").warning(
            "unknown type %s", "login\x1b[2J\n2026-12-03 [error] forged\x9b"
        )
    text = out.getvalue()
    assert text.count("\n") == 1  # one line
    assert not any(ch in text for ch in "\x1b\x07\x9b\u202e")
    assert "login\\x1b[2J\\x0a2026-12-03 [error] forged\\x9b" in text
    assert "acme\\u202eemca" in text


@pytest.mark.parametrize(
    ("stream", "env", "expected"),
    [
        (io.StringIO(), None, "json"),  # a file, a pipe: `up`'s services
        (Terminal(), None, "console"),
        (Terminal(), "json", "json"),
        (io.StringIO(), "CONSOLE", "console"),
    ],
)
def test_the_format_follows_the_variable_else_whether_it_is_a_terminal(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, env: str | None, expected: str
) -> None:
    if env is not None:
        monkeypatch.setenv(FORMAT_VAR, env)
    configure_logging("info", stream=stream)
    logging.getLogger("x").info("hello")
    first = stream.getvalue().splitlines()[0]
    assert first.startswith("{") == (expected == "json"), first


def test_the_level_comes_from_the_argument_else_the_variable_else_info(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging(stream=io.StringIO())
    assert logging.getLogger().level == logging.INFO
    monkeypatch.setenv(LEVEL_VAR, "debug")
    configure_logging(stream=io.StringIO())
    assert logging.getLogger().level == logging.DEBUG
    configure_logging("error", stream=io.StringIO())
    assert logging.getLogger().level == logging.ERROR


@pytest.mark.parametrize(("variable", "value"), [(FORMAT_VAR, "yaml"), (LEVEL_VAR, "loud")])
def test_a_setting_that_does_not_exist_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(LogSettingError) as refused:
        configure_logging(stream=io.StringIO())
    assert variable in str(refused.value) and repr(value) in str(refused.value)


def test_a_command_given_a_level_that_does_not_exist_stops_before_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ops.cli import app

    result = CliRunner().invoke(app, ["worker", "--loglevel", "loud"])
    assert result.exit_code == 2, result.output
    assert "'loud'" in result.output and "debug, info" in result.output


def test_configured_twice_it_logs_each_line_once_and_replaces_foreign_handlers() -> None:
    logging.getLogger().addHandler(logging.StreamHandler(io.StringIO()))  # a basicConfig
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("info", "json", second)
    logging.getLogger("x").info("once")
    assert len(logging.getLogger().handlers) == 1
    assert first.getvalue() == "" and len(lines(second)) == 1


def test_structlog_loggers_and_warnings_go_through_the_same_handler() -> None:
    import warnings

    import structlog

    out = io.StringIO()
    configure_logging("info", "json", out, service="sink")
    structlog.get_logger("sealstream.sink").info("batch written", rows=3)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # pytest's filters would raise it
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    written, warned = lines(out)
    assert written["message"] == "batch written" and written["rows"] == 3
    assert written["service"] == "sink"
    assert warned["logger"] == "py.warnings" and "deprecated thing" in warned["message"]


def test_bound_restores_the_context_it_found_including_what_the_block_bound() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = logging.getLogger("x")
    with bound(correlation_id="outer"):
        with bound(correlation_id="inner", partition=3):
            bind(tenant="acme")
            log.info("inside")
        log.info("outside")
    log.info("none")
    inside, outside, none = lines(out)
    assert (inside["correlation_id"], inside["partition"], inside["tenant"]) == ("inner", 3, "acme")
    assert outside["correlation_id"] == "outer"
    assert "partition" not in outside and "tenant" not in outside
    assert not {"correlation_id", "partition", "tenant"} & none.keys()


def test_bound_restores_the_context_when_the_block_raises() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    with pytest.raises(ValueError), bound(event_id="e-1"):
        raise ValueError("refused")
    logging.getLogger("x").info("after")
    assert "event_id" not in lines(out)[0]


def test_concurrent_gateway_requests_log_their_own_ids_only() -> None:
    """Two requests in flight at once through the gateway's middleware (http.LogContext): each
    line carries its own request's ids and tenant, an error answer the request id its lines
    logged, and nothing is left bound after them."""
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = logging.getLogger("sealstream.gateway")
    arrived: dict[str, asyncio.Event] = {"acme": asyncio.Event(), "globex": asyncio.Event()}

    async def endpoint(request: Request) -> JSONResponse:
        tenant = request.headers["x-tenant"]
        bind(tenant=tenant)
        arrived[tenant].set()
        other = "globex" if tenant == "acme" else "acme"
        await arrived[other].wait()  # both requests are in flight before either logs
        log.info("publishing for %s", tenant)
        if tenant == "globex":
            raise ValueError("refused")
        return JSONResponse({"request_id": http.context(request).request_id})

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        log.warning("refused")
        return JSONResponse({"request_id": http.context(request).request_id}, status_code=400)

    app = http.LogContext(
        Starlette(
            routes=[Route("/", endpoint, methods=["POST"])],
            exception_handlers={ValueError: refused},
        )
    )

    async def both() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post("/", headers={"x-tenant": t, "x-correlation-id": f"c-{t}"})
                        for t in ("acme", "globex")
                    )
                )
            )

    acme, globex = asyncio.run(both())
    assert (acme.status_code, globex.status_code) == (200, 400)
    logged = [line for line in lines(out) if line["logger"] == log.name]  # not httpx's
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for line in logged:
        by_tenant.setdefault(line["tenant"], []).append(line)
    assert [line["message"] for line in by_tenant["acme"]] == ["publishing for acme"]
    assert [line["message"] for line in by_tenant["globex"]] == ["publishing for globex", "refused"]
    for tenant, answer in (("acme", acme), ("globex", globex)):
        for line in by_tenant[tenant]:
            assert line["correlation_id"] == f"c-{tenant}"
            assert line["request_id"] == answer.json()["request_id"]
    assert acme.json()["request_id"] != globex.json()["request_id"]
    log.info("after")
    assert not {"tenant", "request_id", "correlation_id"} & lines(out)[-1].keys()
    assert lines(out)[-1]["message"] == "after"


def test_a_gateway_bug_is_logged_and_answered_with_the_requests_ids() -> None:
    """Starlette answers an unhandled exception outside the gateway's middleware: its 500 was
    plain text without X-Request-ID, and uvicorn's traceback line carried no request id."""
    out = io.StringIO()
    configure_logging("info", "json", out)

    async def endpoint(request: Request) -> JSONResponse:
        bind(tenant="acme")
        raise RuntimeError("a bug")

    # as producers/app.py adds it: inside Starlette's ServerErrorMiddleware, which answers last
    app = Starlette(
        routes=[Route("/", endpoint, methods=["POST"])], middleware=[Middleware(http.LogContext)]
    )

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post("/", headers={"x-correlation-id": "c-1"})

    answer = asyncio.run(call())
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    request_id = answer.headers["x-request-id"]
    assert answer.json()["request_id"] == request_id
    (line,) = [line for line in lines(out) if line["logger"] == "sealstream.gateway"]
    assert (
        line["message"] == "unexpected failure on POST /"
        and "RuntimeError: a bug" in line["exception"]
    )
    assert (line["request_id"], line["correlation_id"], line["tenant"]) == (
        request_id,
        "c-1",
        "acme",
    )


def test_the_faust_worker_logs_through_the_same_handler_once(tmp_path: Path) -> None:
    """mode sets logging up again when faust's worker starts (ops/cli/worker.py): its lines,
    and ours, still go through the one handler, as JSON, once each."""
    from ops.cli.worker import faust_worker
    from tests.unit.test_streams_agent import make_harness

    out = io.StringIO()
    handler = configure_logging("warning", "json", out, service="worker")
    harness = make_harness(tmp_path)
    app, _recorder, _decoder = next(harness)
    try:
        worker = faust_worker(app, handler)
        worker._setup_logging()  # what mode's Worker.execute_from_commandline does first
        logging.getLogger("faust.worker").warning("from faust")
        logging.getLogger("sealstream.worker").info("below the level")
        assert logging.getLogger().handlers == [handler]  # no spinner's
        assert logging.getLogger().level == logging.WARNING
        (line,) = lines(out)
        assert line["message"] == "from faust" and line["service"] == "worker"
    finally:
        harness.close()
