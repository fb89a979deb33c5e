"""What every command shares: the settings of the run, and the terminal's feedback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from ops.errors import UsageError
from ops.feedback import Advance, Tracker
from ops.settings import Settings
from sealstream.logs import printable

err = Console(stderr=True)


def safe(value: object, style: str = "") -> Text:
    """``value`` as text for a terminal, never markup: publishers' and analysts' fields (a
    payload, a dead letter's message, an engine error quoting a stored value) reach tables and
    messages. Markup in them styled the output or made links, an unbalanced ``[/]`` crashed
    the command (its exit code lost), and control characters and bidirectional overrides are
    shown as escapes (sealstream/logs.py ``printable``) rather than acting on the terminal."""
    return Text(printable("-" if value is None else str(value)), style=style)


# a service command's log level; the format is SEALSTREAM_LOG_FORMAT's (sealstream/logs.py)
LOGLEVEL = typer.Option(
    None, "--loglevel", help="Log level [env SEALSTREAM_LOG_LEVEL; default info]."
)


def configure(loglevel: str | None, service: str) -> logging.Handler:
    """The service's logging (sealstream/logs.py); a level or format that does not exist is a
    usage error before anything starts."""
    from sealstream.logs import LogSettingError, configure_logging

    try:
        return configure_logging(loglevel, service=service)
    except LogSettingError as exc:
        raise UsageError(str(exc)) from exc


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root command loaded for this run (``ctx.obj``)."""
    return ctx.ensure_object(Settings)


def plain_bars() -> Progress:
    """rich's default bars on stderr, cleared when done."""
    return Progress(console=err, transient=True)


def counted_bars() -> Progress:
    """Bars with a count (``n/total``) on stderr, cleared when done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    )


class _Bars:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def task(self, description: str, total: int | None = None) -> Advance:
        task: TaskID = self.progress.add_task(description, total=total)
        return lambda n: self.progress.advance(task, n)


class ConsoleFeedback:
    """A long action's progress bars and warnings, on the terminal (stderr)."""

    def __init__(self, make_bars: Callable[[], Progress] = plain_bars) -> None:
        self.make_bars = make_bars

    @contextlib.contextmanager
    def bars(self) -> Iterator[Tracker]:
        with self.make_bars() as progress:
            yield _Bars(progress)

    def warn(self, message: str) -> None:
        err.print(safe(message, "yellow"))
