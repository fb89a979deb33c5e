"""The signing worker's Prometheus metrics (``streams/agent.py`` counts them)."""

from __future__ import annotations

from prometheus_client import Counter

PROCESSED = Counter(
    "sealstream_worker_events_signed_total", "Events signed", ["tenant", "event_type"]
)
DEAD = Counter(  # tenant and event_type from the gateway's headers ('' for poison)
    "sealstream_worker_dead_letters_total",
    "Events dead-lettered",
    ["tenant", "event_type", "reason", "stage"],
)
REPLAYED = Counter(
    "sealstream_worker_redelivered_skipped_total", "Redelivered events already signed (skipped)"
)
RETRIES = Counter("sealstream_worker_retries_total", "Transient failures retried", ["reason"])
DUPLICATES = Counter(
    "sealstream_worker_duplicates_dropped_total",
    "Events whose (tenant, event_id) the chain had already signed (a retried request the "
    "gateway produced twice): dropped, not signed again",
    ["tenant"],
)
CHECKPOINTS = Counter(
    "sealstream_worker_checkpoints_total",
    "Signed checkpoints of a chain's head, by what triggered them",
    ["reason"],
)
STALE = Counter(
    "sealstream_worker_revoked_events_skipped_total",
    "Buffered events of partitions revoked from this worker: left to their next owner",
)
STALE_TRANSACTIONS = Counter(
    "sealstream_worker_stale_transactions_aborted_total",
    "Transactions of an earlier ownership of a partition aborted at a rebalance",
)
FOREIGN = Counter(
    "sealstream_worker_foreign_signed_records_total",
    "Records on the output topic not of the chain they sit in or not signed with the worker's "
    "keys, seen when a partition's chain is resumed (ignored; written by someone else)",
)
GAP_FILLED = Counter(
    "sealstream_worker_gap_filled_total",
    "Input events the consumer skipped over and the agent read back and processed in order",
)
