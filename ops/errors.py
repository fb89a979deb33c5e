"""The operator tools' errors: one root, each kind with the exit code a script sees.

    OperatorError              1  the root: the tool could not do what was asked
    ├── UsageError             2  a bad option or argument (also a ValueError)
    ├── Forbidden              2  a token refused, or one without the scope the action needs
    ├── Unavailable            2  a store, the broker or the registry cannot be reached or read
    │   └── Unreachable        3  the hot store for `query` and `clickhouse migrate`
    ├── NotFound               1  what was named is not there (a dead letter, an event, a log)
    ├── Refused                1  the other side said no: a rejected query, a failed migration,
    │                             a confirmation declined
    ├── ProblemsFound          1  the tool ran and its report (already printed) says what is wrong
    └── ServiceExit            n  a foreground service stopped with a code of its own (75, 69)

The library under ``ops/`` and the commands raise them; the root command maps each, once, to
its message and exit code (``ops/cli/__init__.py``). The message is printed in red, on stderr
unless ``stdout`` says the command has always printed it there.
"""

from __future__ import annotations


class OperatorError(Exception):
    """The operator tools' root error: a message for the operator and the exit code."""

    exit_code: int = 1

    def __init__(self, message: str = "", *, stdout: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.stdout = stdout


class UsageError(OperatorError, ValueError):
    """A bad option or argument."""

    exit_code = 2


class Forbidden(OperatorError):
    """A token refused, or one that lacks the scope the action needs."""

    exit_code = 2


class Unavailable(OperatorError):
    """A store, the broker or the registry cannot be reached or read."""

    exit_code = 2


class Unreachable(Unavailable):
    """The hot store cannot be reached by `query` or `clickhouse migrate` (documented: 3)."""

    exit_code = 3


class NotFound(OperatorError):
    """What was named is not there."""


class Refused(OperatorError):
    """Refused: a rejected query, a failed migration, a confirmation declined."""


class ProblemsFound(OperatorError):
    """The tool ran and found problems; its report, already printed, says which."""


class ServiceExit(OperatorError):
    """A foreground service stopped with an exit code of its own (a sink: 75 or 69)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__()
        self.exit_code = exit_code
