"""How a long operator action shows progress and warnings without knowing where they go.

The library under ``ops/`` reports through a :class:`Feedback`; the command line passes one
that draws rich progress bars and prints warnings on stderr, anything else may pass
:data:`SILENT`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

Advance = Callable[[int], None]


class Tracker(Protocol):
    """An open set of progress bars."""

    def task(self, description: str, total: int | None = None) -> Advance:
        """Add a bar; the function it returns advances it by n."""
        ...


class Feedback(Protocol):
    """Where a long action's progress bars and warnings go."""

    def bars(self) -> AbstractContextManager[Tracker]:
        """Progress bars, shown while the context is open."""
        ...

    def warn(self, message: str) -> None:
        """Something the operator should know; the action goes on."""
        ...


class _NoBars:
    def task(self, description: str, total: int | None = None) -> Advance:
        return lambda n: None


class Silent:
    """Feedback that shows nothing."""

    @contextlib.contextmanager
    def bars(self) -> Iterator[Tracker]:
        yield _NoBars()

    def warn(self, message: str) -> None:
        pass


SILENT = Silent()
