"""One logging set-up for every Sealstream process: :func:`configure_logging`.

Every module logs through the standard library (``logging.getLogger(...)``), and so do the
libraries underneath (faust, aiokafka, uvicorn); structlog's ``ProcessorFormatter`` renders
all of it on one stderr handler:

- ``json``: one JSON object per line (``timestamp``, ``level``, ``logger``, ``service``, the
  context bound where the line was logged, ``message``, ``exception``: the traceback, never
  the frames' local variables), for files and log shippers: the default when stderr is not
  a terminal, so under ``sealstream up``, whose services log to files;
- ``console``: aligned, coloured lines for a person at a terminal (the default there).

``SEALSTREAM_LOG_FORMAT`` (json|console) and ``SEALSTREAM_LOG_LEVEL`` (debug|info|warning|
error|critical) choose otherwise; a command's ``--loglevel`` wins over the variable.

Context (the correlation id, the tenant, the event id) is bound with :func:`bound` for a
piece of work, in ``contextvars``: an asyncio task sees only its own, so two requests of the
gateway served at once never mix theirs, and every line logged inside the block carries it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import IO, Any

import structlog

FORMATS = ("json", "console")
LEVELS = ("debug", "info", "warning", "error", "critical")
FORMAT_VAR = "SEALSTREAM_LOG_FORMAT"
LEVEL_VAR = "SEALSTREAM_LOG_LEVEL"

__all__ = [
    "LogSettingError", "bind", "bound", "configure_logging", "formatter", "handler", "printable",
]  # fmt: skip

# The context lines get: one immutable dict in one variable, so that a block of work binds
# and restores it with one ``set`` and one ``reset`` (a few hundred nanoseconds) where
# structlog's own contextvars, one variable per key, took 11 us a record to snapshot and
# restore (the worker binds per input record, the gateway per request).
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "sealstream_log_context", default=MappingProxyType({})
)


def bind(**values: Any) -> None:
    """Bind ``values`` for the rest of the current block of work (see :func:`bound`)."""
    _CONTEXT.set({**_CONTEXT.get(), **values})


def _merge_context(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    """The bound context, after the line's own fields (which win over it)."""
    for key, value in _CONTEXT.get().items():
        event.setdefault(key, value)
    return event


class LogSettingError(ValueError):
    """A log format or level that does not exist: the process refuses to start."""


def _choice(value: str | None, variable: str, allowed: tuple[str, ...], default: str) -> str:
    chosen = (value if value is not None else os.environ.get(variable, "")).strip().lower()
    if not chosen:
        return default
    if chosen not in allowed:
        source = "the log setting" if value is not None else variable
        raise LogSettingError(f"{source} is {chosen!r}; it must be one of {', '.join(allowed)}")
    return chosen


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def _shared(service: str | None) -> list[Any]:
    """What every line gets, from structlog or from the standard library."""
    steps: list[Any] = [
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
    ]
    if service:
        steps.append(_add(service=service))
    steps += [_merge_context, structlog.contextvars.merge_contextvars]  # ours, then structlog's
    return steps


def _add(**fields: str) -> Any:
    def add(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in fields.items():
            event.setdefault(key, value)
        return event

    return add


# What a line for people must not carry as is: C0 and C1 controls and DEL (an escape sequence
# in a tenant's field could recolour, move or hide text on the operator's terminal, or make a
# link; a newline could forge a line), the bidirectional controls that reorder what is shown
# and the invisible separators. JSON lines escape them already.
_UNPRINTABLE = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
} | {
    code: f"\\u{code:04x}"
    for code in (
        0x061C, *range(0x200B, 0x2010), *range(0x2028, 0x202F), *range(0x2066, 0x206A), 0xFEFF
    )
}  # fmt: skip


def printable(text: str) -> str:
    """``text`` with every character of _UNPRINTABLE written as its escape (``\\x1b``)."""
    return text.translate(_UNPRINTABLE)


def _printable(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Every string field of a console line with its controls written as escapes."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = printable(value)
    return event


def formatter(fmt: str, service: str | None = None, colors: bool = False) -> logging.Formatter:
    """How a line is rendered: ``json`` (one object per line) or ``console``."""
    renderer: list[Any]
    if fmt == "json":
        # a traceback as text, never with the frames' local variables (a token, a password)
        renderer = [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(),
        ]
    else:
        tracebacks = (
            structlog.dev.RichTracebackFormatter(show_locals=False)
            if colors
            else structlog.dev.plain_traceback
        )
        renderer = [
            _printable,
            structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=tracebacks),
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared(service),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )


def handler(
    fmt: str | None = None, stream: IO[str] | None = None, service: str | None = None
) -> logging.Handler:
    """The handler every process logs through: stderr (or ``stream``), rendered as JSON lines
    or for the console (``fmt``, else ``SEALSTREAM_LOG_FORMAT``, else by whether the stream is
    a terminal)."""
    out = stream if stream is not None else sys.stderr
    chosen = _choice(fmt, FORMAT_VAR, FORMATS, "console" if _isatty(out) else "json")
    found = logging.StreamHandler(out)
    found.setFormatter(formatter(chosen, service, colors=chosen == "console" and _isatty(out)))
    return found


def configure_logging(
    level: str | None = None,
    fmt: str | None = None,
    stream: IO[str] | None = None,
    service: str | None = None,
) -> logging.Handler:
    """Route every logger of the process to one handler (:func:`handler`) at ``level`` (else
    ``SEALSTREAM_LOG_LEVEL``, else info). Called again, it replaces its handler instead of
    adding a second one; handlers others installed on the root logger are removed too (a
    library's ``basicConfig`` would print every line twice). ``service`` names the process in
    every line. Raises :class:`LogSettingError` for a format or level that does not exist."""
    chosen = _choice(level, LEVEL_VAR, LEVELS, "info")
    installed = handler(fmt, stream, service)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(installed)
    root.setLevel(chosen.upper())
    logging.captureWarnings(True)
    # structlog's own loggers (structlog.get_logger) go through the same handler
    structlog.configure(
        processors=[
            *_shared(service),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return installed


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind ``values`` (those not None) for the block; at its end the context is as it was
    before, including whatever the block bound itself with :func:`bind` (the tenant once the
    token is verified, say): nothing leaks into the next request or record handled by the
    same task."""
    fresh = {key: value for key, value in values.items() if value is not None}
    token = _CONTEXT.set({**_CONTEXT.get(), **fresh})
    try:
        yield
    finally:
        _CONTEXT.reset(token)
