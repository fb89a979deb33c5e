"""Shared test set-up: strict about leaked threads from the code under test.

A test that leaves a non-daemon thread running would keep the interpreter (and CI) alive
after the session ends, so the test fails at teardown naming the thread. Daemon threads
(a session fixture's server, librdkafka's own are not Python threads) are not counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

THREAD_GRACE_S = 5.0  # executors and clients finish their shutdown in the background


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    leaked: list[threading.Thread] = []
    while True:
        leaked = [
            t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
        ]
        if not leaked or time.monotonic() >= deadline:
            break
        leaked[0].join(timeout=0.1)
    if leaked:
        names = ", ".join(sorted(t.name for t in leaked))
        pytest.fail(f"the test left non-daemon threads running: {names}", pytrace=False)
