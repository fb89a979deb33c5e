"""Work of one tenant's requests that reach the same turn of the event loop, done once for
them all: one Merkle tree and signature (producers/receipts.py ``SigningWindow``), one set of
frames (producers/framing.py ``FrameWindow``).

The first request of a turn schedules the work with ``call_soon``: it runs once the callbacks
already due have run (Kafka's acknowledgements of other requests arrive together, from one
poll of the delivery thread), so no request waits on a timer. Work never mixes tenants: a
receipt's tree or a shared record would tell one tenant of another's traffic.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class TurnBatch(Generic[Item, Result]):
    """``work(items)`` gets the items of every request of one tenant in this turn, in arrival
    order, and returns one result per item; each request gets its own items' results, in
    order. If ``work`` raises, every request of that tenant's turn hears it (and the other
    tenants' work of the turn still runs)."""

    def __init__(self, work: Callable[[list[Item]], Sequence[Result]]) -> None:
        self.work = work
        # tenant -> the requests waiting for this turn
        self._pending: dict[str, list[tuple[Sequence[Item], asyncio.Future[list[Result]]]]] = {}

    async def submit(self, tenant: str, items: Sequence[Item]) -> list[Result]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Result]] = loop.create_future()
        if not self._pending:
            # in a context of its own: the turn's work is every tenant's, and would log in
            # the context (request id, tenant) of the request that scheduled it
            loop.call_soon(self._run, context=contextvars.Context())
        self._pending.setdefault(tenant, []).append((items, future))
        return await future

    def _run(self) -> None:
        turns, self._pending = self._pending, {}
        interrupted: BaseException | None = None
        for pending in turns.values():
            try:
                results = self.work([item for items, _ in pending for item in items])
            except BaseException as exc:  # no request may be left waiting on this turn
                failure: BaseException = exc
                if not isinstance(exc, Exception) or isinstance(exc, StopIteration):
                    # a future takes neither (StopIteration) or should not carry them
                    failure = RuntimeError(f"the turn's work was interrupted: {exc!r}")
                    if not isinstance(exc, asyncio.CancelledError):
                        interrupted = exc  # SystemExit, KeyboardInterrupt: raised below
                for _, future in pending:
                    if not future.done():
                        future.set_exception(failure)
                continue
            start = 0
            for items, future in pending:
                if not future.done():  # a request cancelled meanwhile
                    future.set_result(list(results[start : start + len(items)]))
                start += len(items)
        if interrupted is not None:
            raise interrupted
