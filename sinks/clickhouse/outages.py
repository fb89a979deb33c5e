"""What the ClickHouse sink remembers of an outage for its next start: when it wrote each
recent batch (in memory), and the marker it leaves next to the engine directory when the
outage broke a part (``<engine dir>.outage.json``).

While the sink process cannot write a byte, chDB may commit the parts of the insert in flight
as if whole although their files are empty (docs/faults.md); the runner has then committed the
batch's offsets. :class:`OutageLog` keeps when each batch was written (the runner's
``on_batch``); the first refused insert stops it forgetting (``began``). When writes work again
and ``after_outage`` finds a broken part, the store saves the marker before it asks for a
restart (writes work at that point; during the outage nothing can be saved): the batches
written from ``MERGE_MARGIN_S`` before the first refused write, or before the last write ahead
of it if that was earlier, until then. The next start reads them back from Kafka
(sinks/clickhouse/recover.py) and removes the marker when it is done.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sinks.clickhouse.parts import MERGE_MARGIN_S
from sinks.runner import Batch

_KEEP_S = MERGE_MARGIN_S + 60.0  # batches older than this are forgotten outside an outage


def marker_path(engine_dir: Path) -> Path:
    """``<engine dir>.outage.json``, beside the engine (as its ``.owner.lock``)."""
    return engine_dir.with_name(f"{engine_dir.name}.outage.json")


@dataclass(frozen=True, order=True)
class Span:
    """Records of one partition, ``first``..``last``: a batch the sink wrote, or a range."""

    topic: str
    partition: int
    first: int
    last: int
    pending: bool = False  # the group's pending range: the runner rebuilds it with its token


@dataclass
class Marker:
    """What an outage left for the next start (the JSON file at :func:`marker_path`)."""

    since: float | None = None  # the first refused write (epoch s); None: no outage seen
    window_start: float | None = None  # batches written from then on are listed
    reason: str = ""
    spans: list[Span] = field(default_factory=list)
    attempts: int = 0  # recoveries that began writing rows
    inserted: list[str] = field(default_factory=list)  # tables rows were written again into

    def to_json(self) -> str:
        return json.dumps(
            {
                "since": self.since,
                "window_start": self.window_start,
                "reason": self.reason,
                "spans": [[s.topic, s.partition, s.first, s.last] for s in sorted(self.spans)],
                "attempts": self.attempts,
                "inserted": self.inserted,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Marker:
        raw = json.loads(text)
        return cls(
            raw.get("since"),
            raw.get("window_start"),
            str(raw.get("reason", "")),
            [Span(str(t), int(p), int(a), int(b)) for t, p, a, b in raw.get("spans", [])],
            int(raw.get("attempts", 0)),
            [str(t) for t in raw.get("inserted", [])],
        )


def load_marker(path: Path) -> Marker | None:
    try:
        return Marker.from_json(path.read_text())
    except FileNotFoundError:
        return None


def save_marker(path: Path, marker: Marker) -> None:
    """Write ``marker`` whole or not at all (a temporary file, fsynced, renamed)."""
    tmp = path.with_name(f"{path.name}.tmp")
    with tmp.open("w") as out:
        out.write(marker.to_json())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class OutageLog:
    """When the sink wrote each recent batch (in memory), and the marker an outage leaves."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._written: dict[tuple[str, int], deque[tuple[float, int, int]]] = {}
        self._holding = False

    def written(self, batch: Batch) -> None:
        """The runner's ``on_batch``: ``batch`` was accepted by the store."""
        now = self.clock()
        recent = self._written.setdefault((batch.topic, batch.partition), deque())
        recent.append((now, batch.first, batch.last))
        if not self._holding:  # keep the last batch of each partition, whatever its age
            while len(recent) > 1 and recent[0][0] < now - _KEEP_S:
                recent.popleft()

    def began(self) -> None:
        """The store refused a write: keep every batch until the outage is over."""
        self._holding = True

    def ended(self) -> None:
        self._holding = False

    def window_start(self, since: float) -> float:
        """Where the batches an outage that began at ``since`` may have broken begin: the
        margin before the first refused write, or before the last write ahead of it (the
        insert in flight when the storage failed; the refusal may have come much later)."""
        ahead = [at for recent in self._written.values() for at, _, _ in recent if at <= since]
        return max(ahead, default=since) - MERGE_MARGIN_S

    def leave_marker(self, since: float, reason: str) -> Marker:
        """Save the marker for the next start (merged with one already there)."""
        start = self.window_start(since)
        spans = {
            Span(topic, partition, first, last)
            for (topic, partition), recent in self._written.items()
            for at, first, last in recent
            if at >= start
        }
        marker = load_marker(self.path) or Marker()
        marker.since = since if marker.since is None else min(marker.since, since)
        marker.window_start = (
            start if marker.window_start is None else min(marker.window_start, start)
        )
        marker.reason = reason
        marker.spans = sorted(spans | set(marker.spans))
        save_marker(self.path, marker)
        return marker
