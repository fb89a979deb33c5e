"""Dead-letter headers: the one contract between what writes a dead letter (the workers to
``events.raw.dlq``, the sinks to ``events.signed.dlq``) and what reads it (the ClickHouse sink's
``dead_letters`` table, ``sealstream dlq``, the audit trail).

A dead letter's value is the original record, unchanged; why it could not be processed rides in
``dlq.*`` headers, next to the record's own headers (``tenant``, ``event_type``, ``event_id``,
``correlation_id``: the audit trail finds a dead letter by them). Readers never trust them:
whatever a header holds, ``from_headers`` gives a value of the right type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PREFIX = "dlq."
MAX_MESSAGE = 1000


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _count(value: str, ceiling: int | None = None) -> int:
    try:
        number = max(0, int(value))
    except ValueError:
        return 0
    return min(number, ceiling) if ceiling is not None else number


@dataclass(frozen=True)
class DeadLetterHeaders:
    """Why a record is a dead letter, and where it came from (``topic``/``partition``/``offset``
    of the record that failed)."""

    reason: str
    stage: str
    message: str = ""
    error_class: str = ""
    topic: str = ""
    partition: int = 0
    offset: int = 0
    attempts: int = 1
    first_failure_ms: int = 0
    last_failure_ms: int = 0
    # the event's place in its record when that record was a frame of several (schemas/frames.py)
    index: int | None = None

    def to_headers(self) -> list[tuple[str, bytes]]:
        """The ``dlq.*`` headers, in the order the workers have always written them."""
        pairs = [
            ("error_class", self.error_class),
            ("reason", self.reason),
            ("message", self.message[:MAX_MESSAGE]),
            ("stage", self.stage),
            ("topic", self.topic),
            ("partition", str(self.partition)),
            ("offset", str(self.offset)),
            ("attempts", str(self.attempts)),
            ("first_failure_ms", str(self.first_failure_ms) if self.first_failure_ms else ""),
            ("last_failure_ms", str(self.last_failure_ms) if self.last_failure_ms else ""),
            ("index", "" if self.index is None else str(self.index)),
        ]
        return [(PREFIX + name, value.encode()) for name, value in pairs if value != ""]

    @classmethod
    def from_headers(cls, headers: Mapping[str, str | bytes | None]) -> DeadLetterHeaders:
        """Whatever a dead letter's headers hold: missing or malformed values become their
        defaults (a reason of ``unknown``), never an error."""

        def get(name: str) -> str:
            return _text(headers.get(PREFIX + name))

        return cls(
            reason=get("reason") or "unknown",
            stage=get("stage") or "unknown",
            message=get("message"),
            error_class=get("error_class"),
            topic=get("topic"),
            partition=_count(get("partition")),
            offset=_count(get("offset")),
            attempts=_count(get("attempts"), 65535),
            first_failure_ms=_count(get("first_failure_ms")),
            last_failure_ms=_count(get("last_failure_ms")),
            index=_count(get("index")) if get("index") else None,
        )


def is_dead_letter_header(name: str) -> bool:
    return name.startswith(PREFIX)


def source_headers(
    headers: Iterable[tuple[str, str | bytes | None]],
) -> list[tuple[str, bytes]]:
    """A dead letter's own headers without the ``dlq.*`` ones (what a replay sends again)."""
    return [
        (name, value if isinstance(value, bytes) else _text(value).encode())
        for name, value in headers
        if value is not None and not is_dead_letter_header(name)
    ]
