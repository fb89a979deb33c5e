"""What the worker does when Kafka fails under it (streams/outputs.py, streams/app.py): a read
it cannot go on without waits the broker out; anything else that escapes the agent, or a record
of a transaction Kafka did not take, stops the worker, so that a new process resumes every
partition from its committed input and output. The broker SIGKILL fault test found the agent
restarted alone by faust after a read timed out, and 2 accepted events never processed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from sealstream.settings import WorkerSettings
from streams import outputs as outputs_module
from streams.outputs import Outputs, patiently, transient
from streams.processor import Source
from tests.patching import record_sleeps
from tests.unit.test_streams_agent import make_harness


def kafka_error(code: int, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "broker says no", fatal=fatal))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (kafka_error(KafkaError._TIMED_OUT), True),  # "Failed to get watermark offsets"
        (kafka_error(KafkaError._ALL_BROKERS_DOWN), True),
        (kafka_error(KafkaError.NOT_COORDINATOR), True),
        (TimeoutError("reading events.raw[3] 0..9 took over 60 s"), True),
        (kafka_error(KafkaError.TOPIC_AUTHORIZATION_FAILED), False),
        (kafka_error(KafkaError._TIMED_OUT, fatal=True), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_failures_are_waited_out(exc: BaseException, expected: bool) -> None:
    assert transient(exc) is expected


def flaky(failures: list[BaseException], answer: Any = "committed tail") -> Callable[[], Any]:
    calls: list[int] = []

    def read() -> Any:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return answer

    read.calls = calls  # type: ignore[attr-defined]
    return read


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    return record_sleeps(monkeypatch, outputs_module.asyncio)


def test_a_read_waits_out_a_broker_that_does_not_answer(no_sleep: list[float]) -> None:
    read = flaky([kafka_error(KafkaError._TIMED_OUT), TimeoutError("slow"), kafka_error(-187)])
    assert asyncio.run(patiently("reading", read)) == "committed tail"
    assert len(read.calls) == 4  # type: ignore[attr-defined]
    assert no_sleep == [0.5, 1.0, 2.0]  # backing off


def test_a_refusal_is_raised_at_once(no_sleep: list[float]) -> None:
    read = flaky([kafka_error(KafkaError.GROUP_AUTHORIZATION_FAILED)])
    with pytest.raises(KafkaException):
        asyncio.run(patiently("reading", read))
    assert no_sleep == []


def test_patience_ends(no_sleep: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs_module, "READ_PATIENCE_S", 3.0)
    read = flaky([kafka_error(KafkaError._TIMED_OUT) for _ in range(10)])
    with pytest.raises(KafkaException):
        asyncio.run(patiently("reading", read))
    assert 0 < len(no_sleep) < 10


def test_other_threads_still_sleep_while_a_test_skips_its_own(no_sleep: list[float]) -> None:
    """The full suite runs a session gateway in a thread of this process; when its loop's
    asyncio.sleep became the test's no-op it spun and filled the test's list (CI: 300 s
    timeouts). Here such a loop ticks during the test: its sleeps are real and not listed."""
    ticks: list[float] = []
    stop = threading.Event()

    async def tick() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())

    other = threading.Thread(target=asyncio.run, args=(tick(),), name="other-loop")
    started = time.monotonic()
    other.start()
    try:
        while len(ticks) < 3:  # the other loop is sleeping under the patch
            stop.wait(0.01)
        assert asyncio.run(patiently("reading", flaky([TimeoutError("slow")]))) == "committed tail"
    finally:
        stop.set()
        other.join(timeout=10)
    assert no_sleep == [0.5]
    assert len(ticks) * 0.01 <= ticks[-1] - started  # each tick really slept its 0.01 s


class FakeApp:
    """The parts of the faust app Outputs.send touches."""

    def __init__(self) -> None:
        self.in_transaction = True
        self.should_stop = False
        self.crashed: list[BaseException] = []
        self.deliveries: list[asyncio.Future[Any]] = []
        self.conf = type("Conf", (), {"id": "sealstream-processor"})()
        self.assignor = type("Assignor", (), {"group_for_topic": lambda self, topic: 0})()
        self.producer = self

    async def send(self, *args: Any, transactional_id: str | None = None) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


def send_and_deliver(app: FakeApp, outcome: BaseException | None) -> list[BaseException]:
    outputs = Outputs(app, WorkerSettings(), None)  # type: ignore[arg-type]

    async def run() -> None:
        source = Source("events.raw", 3, 57, {})
        await outputs.send(source, "events.signed", b"v", b"k", 3, [])
        (delivery,) = app.deliveries
        if outcome is None:
            delivery.set_result("metadata")
        else:
            delivery.set_exception(outcome)
        await asyncio.sleep(0)  # one turn of the loop: the future's done callbacks run
        if outputs.stopping is not None:
            await outputs.stopping  # the crash the callback started

    asyncio.run(run())
    return app.crashed


def test_a_transactions_record_kafka_did_not_take_stops_the_worker() -> None:
    timed_out = kafka_error(KafkaError._MSG_TIMED_OUT)
    assert send_and_deliver(FakeApp(), timed_out) == [timed_out]


def test_a_delivered_record_stops_nothing() -> None:
    assert send_and_deliver(FakeApp(), None) == []


def test_a_failure_while_the_worker_stops_anyway_is_not_a_second_crash() -> None:
    app = FakeApp()
    app.should_stop = True
    assert send_and_deliver(app, kafka_error(KafkaError._MSG_TIMED_OUT)) == []


def test_an_exception_out_of_the_agent_stops_the_worker(tmp_path: Path) -> None:
    """Not faust's default (commit what was acked, restart the agent in the same process,
    what it held lost): the worker's app crashes, and commits nothing."""
    harness = make_harness(tmp_path)
    app, _recorder, _decoder = next(harness)
    try:
        crashed: list[BaseException] = []
        committed: list[BaseException] = []

        async def crash(exc: BaseException) -> None:
            crashed.append(exc)

        async def on_task_error(exc: BaseException) -> None:  # faust's: a commit
            committed.append(exc)

        app.crash = crash
        app.consumer.on_task_error = on_task_error
        failure = kafka_error(KafkaError._TIMED_OUT)
        # what faust's agent calls when its coroutine raises (Agent._execute_actor)
        asyncio.run(app.sign_events._on_error(app.sign_events, failure))
        assert crashed == [failure] and committed == []
    finally:
        harness.close()
