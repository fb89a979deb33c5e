"""Prometheus metrics of the gateway, named by Prometheus conventions; labels correlate with
the other stages' (tenant, event_type, reason)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "sealstream_gateway_events_accepted_total",
            "Events Kafka acknowledged",
            ["tenant", "event_type"],
            registry=r,
        )
        self.rejected = Counter(
            "sealstream_gateway_events_rejected_total",
            "Events refused (validation, limits, Kafka unavailable), by reason",
            ["tenant", "event_type", "reason"],
            registry=r,
        )
        self.denied = Counter(
            "sealstream_gateway_authz_denied_total",
            "Authorization denials, by policy reason",
            ["tenant", "event_type", "reason"],
            registry=r,
        )
        self.auth_failures = Counter(
            "sealstream_gateway_auth_failures_total",
            "Requests refused by authentication",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "sealstream_gateway_events_duplicate_total",
            "Retried events answered with their first receipt",
            ["tenant", "event_type"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "sealstream_gateway_request_duration_seconds",
            "Time to answer POST /v1/events",
            ["status"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.token_cache = Gauge(
            "sealstream_gateway_token_cache_entries",
            "Verified tokens cached",
            registry=r,
        )
