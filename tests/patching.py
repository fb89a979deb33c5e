"""Patching what every thread of the process shares, for the test's own thread only.

``time.sleep``, ``asyncio.sleep``, ``socket.socket.connect`` or ``uuid.uuid4`` are attributes
of modules every thread shares, so a test that patches them patches them for the whole
process. In the full suite a session fixture's gateway (uvicorn ticks with
``asyncio.sleep(0.1)``) runs in a thread of the same process: with a no-op in its place its
loop spun, appended millions of 0.1 s to the test's list, and two tests of streams/outputs.py
timed out at 300 s in CI while they passed alone. With ``this_thread`` the fake answers the
thread that installed it; every other thread keeps the real thing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest


def this_thread(real: Callable[..., Any], fake: Callable[..., Any]) -> Callable[..., Any]:
    """``fake`` when called from the current thread, ``real`` from any other. Works for
    coroutine functions too: either call's coroutine is returned to be awaited."""
    mine = threading.get_ident()

    def either(*args: Any, **kwargs: Any) -> Any:
        chosen = fake if threading.get_ident() == mine else real
        return chosen(*args, **kwargs)

    return either


def record_sleeps(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[float]:
    """Patch ``module.sleep`` (``time`` or ``asyncio``) so the current thread's sleeps return
    at once and are listed in order; returns the list."""
    slept: list[float] = []
    if module is asyncio:

        async def skipped(delay: float, result: Any = None) -> Any:
            slept.append(delay)
            return result

        monkeypatch.setattr(asyncio, "sleep", this_thread(asyncio.sleep, skipped))
    elif module is time:
        monkeypatch.setattr(time, "sleep", this_thread(time.sleep, slept.append))
    else:
        raise TypeError(f"record_sleeps patches time or asyncio, not {module!r}")
    return slept
