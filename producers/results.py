"""What ``IngestService.publish`` answers, before HTTP: typed results, so that status codes,
bodies and headers are made in one place (``producers/http.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from producers.errors import GatewayError
from producers.ratelimit import Verdict
from producers.validation import FieldError


@dataclass(frozen=True)
class Accepted:
    """Kafka has the event (or had it already: ``duplicate``, the first receipt again)."""

    index: int
    event_id: str
    receipt: dict[str, Any]
    duplicate: bool = False


@dataclass(frozen=True)
class Rejected:
    """One event refused. ``error`` is what was wrong with it (a field error: validation,
    authorization, size, a repeated id) or with Kafka's answer (a gateway error); ``extra``
    goes into the error object (the receipt that holds a conflicting id)."""

    index: int
    status: int
    error: FieldError | GatewayError
    event_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def error_body(self) -> dict[str, Any]:
        body = self.error.body()
        found = body if isinstance(self.error, FieldError) else body["error"]
        return {**found, **self.extra}


@dataclass(frozen=True)
class Published:
    """The request's events, each accepted or rejected, and the rate limiter's verdict."""

    is_batch: bool
    accepted: list[Accepted]
    rejected: list[Rejected]
    verdict: Verdict
