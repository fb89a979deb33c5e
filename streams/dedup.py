"""The worker's deduplication window: which ``(tenant, event_id)`` a chain already signed.

Why the worker deduplicates at all: the gateway's receipt store answers a retry with the
first receipt, but only once that receipt is known. When a gateway dies after Kafka
acknowledged an event and before the client saw the 202 (or before the receipt reached the
``receipts`` topic), the client's retry is produced again: two records in ``events.raw`` with
the same event id (the fault suite's gateway SIGKILL case found 9 of them in one CI run).
The gateway's partition key is ``<tenant>/<event_id>``, so both land on the same partition,
whatever entity key each came with, and the worker of that partition drops the second one
before it is signed: no second chain entry, row or file.

The window is kept in memory, per input partition, and is rebuilt from the *committed* output
when a partition is (re)assigned (``streams/heads.py``): a signed record and its input offset
commit in one transaction, so the window never holds an event whose signing was aborted, and
never misses one that committed. It is bounded by age and by count (settings
``dedup_window_s`` and ``dedup_max_per_partition``); a retry later than that is signed again,
and ClickHouse's ``events`` table still keeps one row per event id.
"""

from __future__ import annotations

from collections import OrderedDict


def dedup_key(tenant: str, event_id: str) -> str:
    # event ids are the clients' own: unique only within a tenant
    return f"{tenant}\x00{event_id}"


class SeenWindow:
    """Event keys with the time (ms) they were signed, oldest first, bounded by age and count.

    An ``OrderedDict`` rather than a probabilistic set (a Bloom or cuckoo filter would be
    smaller): a false positive here would drop an accepted event, which must never happen.
    """

    def __init__(self, max_entries: int, max_age_ms: int) -> None:
        self.max_entries = max_entries
        self.max_age_ms = max_age_ms
        self._items: OrderedDict[str, int] = OrderedDict()

    def add(self, key: str, at_ms: int) -> None:
        if self.max_entries <= 0:
            return
        self._items[key] = at_ms
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def seen(self, key: str, now_ms: int) -> bool:
        self._expire(now_ms)
        return key in self._items

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.max_age_ms
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest >= horizon:
                return
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
