"""producers/turns.py: one tenant's requests of one event-loop turn are worked together, never
with another tenant's; a failure reaches exactly that tenant's requests of the turn."""

from __future__ import annotations

import asyncio

import pytest

from producers.turns import TurnBatch
from sealstream import logs


def test_a_turn_works_each_tenants_requests_together_and_apart() -> None:
    calls: list[list[str]] = []

    def work(items: list[str]) -> list[str]:
        calls.append(items)
        if "boom" in items:
            raise RuntimeError("refused")
        return [item.upper() for item in items]

    async def main() -> list[object]:
        turns: TurnBatch[str, str] = TurnBatch(work)
        return await asyncio.gather(
            turns.submit("acme", ["a", "b"]),
            turns.submit("globex", ["x"]),
            turns.submit("acme", ["c"]),
            turns.submit("initech", ["boom"]),
            turns.submit("initech", ["z"]),
            return_exceptions=True,
        )

    acme_ab, globex, acme_c, initech_boom, initech_z = asyncio.run(main())
    assert (acme_ab, globex, acme_c) == (["A", "B"], ["X"], ["C"])
    assert isinstance(initech_boom, RuntimeError) and isinstance(initech_z, RuntimeError)
    assert sorted(calls) == [["a", "b", "c"], ["boom", "z"], ["x"]]  # one call per tenant


def test_a_cancelled_request_does_not_keep_the_others_of_its_turn_waiting() -> None:
    async def main() -> list[int]:
        turns: TurnBatch[int, int] = TurnBatch(lambda items: [i * 10 for i in items])
        first = asyncio.ensure_future(turns.submit("acme", [1]))
        second = asyncio.ensure_future(turns.submit("acme", [2, 3]))
        await asyncio.sleep(0)  # both are waiting on the turn
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await asyncio.wait_for(second, 5)

    assert asyncio.run(main()) == [20, 30]


def test_work_interrupted_by_a_base_exception_leaves_no_request_waiting() -> None:
    def work(items: list[str]) -> list[str]:
        if items == ["stop"]:
            raise StopIteration  # a future cannot carry it: a RuntimeError instead
        if items == ["cancel"]:
            raise asyncio.CancelledError
        return items

    async def main() -> list[object]:
        turns: TurnBatch[str, str] = TurnBatch(work)
        return await asyncio.wait_for(
            asyncio.gather(
                turns.submit("acme", ["stop"]),
                turns.submit("globex", ["cancel"]),
                turns.submit("initech", ["fine"]),
                return_exceptions=True,
            ),
            5,
        )

    stopped, cancelled, fine = asyncio.run(main())
    assert isinstance(stopped, RuntimeError) and isinstance(cancelled, RuntimeError)
    assert fine == ["fine"]


def test_a_turns_work_runs_in_no_requests_log_context() -> None:
    """The work of a turn is every tenant's: in the context of the request that scheduled it,
    globex's failure to persist a receipt was logged as acme's request."""
    seen: list[dict[str, object]] = []

    def work(items: list[str]) -> list[str]:
        seen.append(dict(logs._CONTEXT.get()))
        return items

    async def request(tenant: str) -> list[str]:
        with logs.bound(request_id=f"r-{tenant}", tenant=tenant):
            return await turns.submit(tenant, [tenant])

    async def main() -> list[list[str]]:
        return list(await asyncio.gather(request("acme"), request("globex")))

    turns: TurnBatch[str, str] = TurnBatch(work)
    assert asyncio.run(main()) == [["acme"], ["globex"]]
    assert seen == [{}, {}]  # one call per tenant, neither in acme's context
