"""Enrichers: each adds a few string attributes to an event, and does one job.

An enricher receives the decoded event and its Kafka headers and returns attributes; the
pipeline runs them in order, each under its own timeout, and merges what they return into the
signed record's ``enrichment``. An enricher that times out or fails raises
:class:`EnrichmentFailed`, which the processor retries with backoff and finally dead-letters.

A timeout can only end an enricher while it waits at an ``await``; one that never waits (the
built-ins here: pure computation over the event and in-memory tables) declares
``timeout_s = None`` and runs without an ``asyncio.timeout`` block (four of them per event cost
about 20 µs, 6 % of the worker's time per event). The pipeline holds it to that: if such an
enricher does wait, it fails with ``enricher_error`` instead of waiting unbounded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import re
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import yaml


class EnrichmentFailed(RuntimeError):
    """An enricher timed out or failed; transient unless told otherwise."""

    def __init__(self, enricher: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.enricher = enricher
        self.reason = reason


@dataclass(frozen=True)
class EnrichInput:
    event: Mapping[str, Any]
    headers: Mapping[str, bytes]
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class Enricher(Protocol):
    name: str
    # None: never waits at an await (runs without a timeout block; waiting is an error)
    timeout_s: float | None

    async def enrich(self, item: EnrichInput) -> dict[str, str]: ...


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)


class TimeFields:
    """Derived time fields and lags: event date/hour, ingest lag, processing lag."""

    name = "time"
    timeout_s: float | None = None  # computes only

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        occurred = _utc(item.event["occurred_at"])
        received = _utc(item.event["received_at"])
        return {
            "event_date": occurred.date().isoformat(),
            "event_hour": f"{occurred.hour:02d}",
            "ingest_lag_ms": str(int((received - occurred).total_seconds() * 1000)),
            "processing_lag_ms": str(int((item.now - received).total_seconds() * 1000)),
        }


_BROWSERS = (
    ("Edg/", "edge"),
    ("Chrome/", "chrome"),
    ("Firefox/", "firefox"),
    ("Safari/", "safari"),
    ("curl/", "curl"),
    ("python-httpx", "httpx"),
)


class ClientAttributes:
    """Network class and client family from the gateway's request metadata headers."""

    name = "client"
    timeout_s: float | None = None  # computes only

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        out: dict[str, str] = {}
        raw_ip = item.headers.get("client_ip")
        if raw_ip:
            try:
                ip = ipaddress.ip_address(raw_ip.decode())
                out["ip_version"] = str(ip.version)
                out["network"] = (
                    "loopback" if ip.is_loopback else "public" if ip.is_global else "private"
                )
            except ValueError:
                out["network"] = "invalid"
        agent = (item.headers.get("user_agent") or b"").decode(errors="replace")
        if agent:
            out["client_family"] = next((n for m, n in _BROWSERS if m in agent), "other")
        return out


class PiiClassification:
    """The event type's data classification and the kinds of personal data it carries."""

    name = "classification"
    timeout_s: float | None = None  # computes only

    def __init__(
        self,
        classification: Mapping[str, str],
        pii: Mapping[str, Mapping[str, str]],
        default: str = "internal",
    ) -> None:
        self.classification = classification
        self.pii = pii
        self.default = default

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        event_type = str(item.event["event_type"])
        kinds = sorted(set(self.pii.get(event_type, {}).values()))
        return {
            "classification": self.classification.get(event_type, self.default),
            "pii_kinds": ",".join(kinds),
        }


class TenantDirectory:
    """Tenant attributes (region, plan, ...) from a YAML file, re-read when it changes, or fed
    from the compacted topic ``tenants.directory`` (key tenant, value JSON object)."""

    name = "tenant"
    timeout_s: float | None = None  # computes only

    def __init__(self, path: Path | None = None, check_every_s: float = 2.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._tenants: dict[str, dict[str, str]] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        if self.path is None or not self.path.exists():
            return
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        raw = yaml.safe_load(self.path.read_text()) or {}
        tenants = {
            str(t): {str(k): str(v) for k, v in (attrs or {}).items()}
            for t, attrs in (raw.get("tenants") or {}).items()
        }
        with self._lock:
            self._tenants, self._stamp = tenants, stamp

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        if not key:
            return
        tenant = key.decode()
        with self._lock:
            if value is None:
                self._tenants.pop(tenant, None)
            else:
                self._tenants[tenant] = {str(k): str(v) for k, v in orjson.loads(value).items()}

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._reload()
        attrs = self._tenants.get(str(item.event["tenant"]))
        if attrs is None:
            return {"tenant_known": "false"}
        return {"tenant_known": "true", **{f"tenant_{k}": v for k, v in attrs.items()}}


class SlowTenant:
    """Fault injection for tests and drills: hangs on one tenant's events so the timeout,
    retry and dead-letter path can be exercised end to end. Off unless configured
    (``SEALSTREAM_WORKER_FAULT_SLOW_TENANT``)."""

    name = "fault_slow"
    timeout_s: float | None = 0.2

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    async def enrich(self, item: EnrichInput) -> dict[str, str]:
        if item.event.get("tenant") == self.tenant:
            await asyncio.sleep(30)
        return {}


_NAME_RE = re.compile(r"^[a-z_]+$")


def _without_waiting(step: Coroutine[Any, Any, dict[str, str]]) -> dict[str, str]:
    """Run a coroutine that must finish without suspending; RuntimeError if it suspends."""
    try:
        step.send(None)
    except StopIteration as done:
        return dict(done.value)
    step.close()
    raise RuntimeError("it waited at an await although it declares timeout_s None")


class Pipeline:
    """Runs enrichers in order, each bounded by its timeout."""

    def __init__(self, enrichers: Sequence[Enricher]) -> None:
        for enricher in enrichers:
            if not _NAME_RE.match(enricher.name):
                raise ValueError(f"enricher name {enricher.name!r} must be lowercase letters")
        self.enrichers = list(enrichers)

    async def run(self, item: EnrichInput) -> dict[str, str]:
        attributes: dict[str, str] = {}
        for enricher in self.enrichers:
            try:
                if enricher.timeout_s is None:
                    found = _without_waiting(enricher.enrich(item))
                else:
                    # asyncio.timeout, not wait_for: no task per enricher per event (wait_for's
                    # task creation was 8 % of the worker's time in a py-spy profile)
                    async with asyncio.timeout(enricher.timeout_s):
                        found = await enricher.enrich(item)
            except TimeoutError as exc:
                raise EnrichmentFailed(
                    enricher.name,
                    "enricher_timeout",
                    f"enricher {enricher.name!r} took longer than {enricher.timeout_s} s",
                ) from exc
            except EnrichmentFailed:
                raise
            except Exception as exc:
                raise EnrichmentFailed(
                    enricher.name, "enricher_error", f"enricher {enricher.name!r} failed: {exc}"
                ) from exc
            attributes.update(found)
        return attributes
