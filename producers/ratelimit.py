"""Token-bucket rate limits per tenant and per client (``sub``), in process.

A request takes as many tokens as it carries events from both the tenant's and the client's
bucket, or from neither: a refused request costs nothing. The answer says how long to wait
(``Retry-After``) and what is left (the IETF ``RateLimit`` header fields).

Why hand-written: the libraries on PyPI for this are either framework middlewares keyed on
IP addresses or Redis-backed; we need two buckets per request, weighted by batch size, behind
one lock, with no network hop. It is thirty lines.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass
class Bucket:
    rate: float  # tokens per second
    burst: float  # capacity
    tokens: float
    stamp: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` tokens are there (infinite if it exceeds the burst)."""
        if cost > self.burst:
            return math.inf
        return max(0.0, (cost - self.tokens) / self.rate)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the tighter bucket is full again
    retry_after_s: float
    scope: str  # "tenant" or "client": which bucket said no (or is tighter)


class RateLimiter:
    def __init__(
        self,
        tenant_rate: float,
        tenant_burst: int,
        client_rate: float,
        client_burst: int,
        max_keys: int = 100_000,
    ) -> None:
        self.defaults = {
            "tenant": (tenant_rate, tenant_burst),
            "client": (client_rate, client_burst),
        }
        self.overrides: dict[str, tuple[float, int]] = {}
        self.max_keys = max_keys
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._lock = threading.Lock()

    def set_tenant_limit(self, tenant: str, rate: float, burst: int) -> None:
        self.overrides[tenant] = (rate, burst)

    def _bucket(self, scope: str, key: str, now: float) -> Bucket:
        bucket = self._buckets.get((scope, key))
        if bucket is None:
            if len(self._buckets) >= self.max_keys:  # forget idle, full buckets first
                self._buckets = {k: b for k, b in self._buckets.items() if b.tokens < b.burst}
            rate, burst = (
                self.overrides.get(key, self.defaults[scope])
                if scope == "tenant"
                else self.defaults[scope]
            )
            bucket = Bucket(rate, float(burst), float(burst), now)
            self._buckets[(scope, key)] = bucket
        bucket.refill(now)
        return bucket

    def take(self, tenant: str, client: str, cost: int = 1, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        with self._lock:
            buckets = {
                "tenant": self._bucket("tenant", tenant, now),
                "client": self._bucket("client", f"{tenant}/{client}", now),
            }
            waits = {scope: b.wait_for(cost) for scope, b in buckets.items()}
            blocking = max(waits, key=lambda s: waits[s])
            allowed = waits[blocking] == 0.0
            if allowed:
                for bucket in buckets.values():
                    bucket.tokens -= cost
            tight = min(buckets, key=lambda s: buckets[s].tokens)
            shown = buckets[blocking if not allowed else tight]
            return Verdict(
                allowed=allowed,
                limit=int(shown.burst),
                remaining=max(0, int(shown.tokens)),
                reset_s=(shown.burst - shown.tokens) / shown.rate,
                retry_after_s=0.0 if allowed else waits[blocking],
                scope=blocking if not allowed else tight,
            )
