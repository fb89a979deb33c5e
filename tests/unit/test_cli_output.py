"""What operators' commands print of what publishers and analysts wrote (ops/cli): as text,
never as rich markup, and with control characters shown as escapes. Before, a dead letter's
message or a query's cell styled the output or made a link, an unbalanced ``[/]`` crashed the
command with a traceback (the error printer too, so its exit code was lost), and escape
sequences reached the terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ops import cli
from ops.cli import dlq as dlq_cli
from ops.cli import sinks as sinks_cli
from ops.errors import Refused
from sealstream.deadletters import DeadLetterHeaders
from streams.dlq import DeadLetter

POISON = (
    "[/] [link=https://evil.example]click[/link] [bold red]OK[/] \x1b[2J\x1b]0;t\x07 \u202e \x9b"
)
RAW = ("\x1b[2J", "\x1b]0;", "\x1b]8;", "\u202e", "\x9b", "\x07")  # none may reach the terminal


def terminal(monkeypatch: pytest.MonkeyPatch, module: Any) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(module, "console", Console(file=out, force_terminal=True, width=400))
    return out


def shown_as_text(text: str) -> None:
    assert not [raw for raw in RAW if raw in text], repr(text)
    assert "[link=https://evil.example]" in text and "[bold red]OK[/]" in text  # literally
    assert "\\x1b[2J" in text and "\\u202e" in text and "\\x9b" in text  # as escapes


def test_a_query_result_cell_is_text(monkeypatch: pytest.MonkeyPatch) -> None:
    out = terminal(monkeypatch, sinks_cli)
    sinks_cli._print_table({"columns": ["message"], "rows": [[POISON]], "row_count": 1,
                            "elapsed_ms": 1.0})  # fmt: skip
    shown_as_text(out.getvalue())


def test_a_dead_letters_message_is_text_in_the_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    error = DeadLetterHeaders(reason="schema_mismatch", stage="validate", message=POISON,
                              topic="events.raw", partition=0, offset=1, attempts=1)  # fmt: skip
    headers = {name: value.decode() for name, value in error.to_headers()}
    letter = DeadLetter("events.raw.dlq", 0, 5, 0, headers, b"{}")
    monkeypatch.setattr(dlq_cli.dlq, "listing", lambda settings, selection: [letter])
    out = terminal(monkeypatch, dlq_cli)
    done = CliRunner().invoke(cli.app, ["dlq", "list"])
    assert done.exit_code == 0, done.output
    shown_as_text(out.getvalue())


def test_an_error_quoting_a_value_keeps_its_message_and_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine's "Cannot parse string '[/]'" in a refusal crashed the error printer."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "Console", lambda **kw: Console(file=out, force_terminal=True))
    code = cli.report(Refused(f"Cannot parse string '{POISON}' as UInt32"))
    assert code == Refused("x").exit_code
    shown_as_text(out.getvalue())


def test_a_receipt_file_prints_as_text_and_odd_shapes_are_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": []}))
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps({"event_id": POISON, "v": "[/]"}))
    done = CliRunner().invoke(cli.app, ["receipts", "verify", str(receipt), "--keys", str(keys)])
    assert done.exit_code == 1 and "INVALID" in done.output, done.output
    assert "[/]" in done.output and "\x1b[2J" not in done.output
    for shape in ({"accepted": 5}, [[[[[[{"event_id": "e"}]]]]]]):
        receipt.write_text(json.dumps(shape))
        done = CliRunner().invoke(
            cli.app, ["receipts", "verify", str(receipt), "--keys", str(keys)]
        )
        assert done.exit_code == 2 and "Traceback" not in done.output, done.output


def test_dead_letter_counts_by_a_headers_value_are_text(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {key: {POISON: 1} for key in ("reason", "stage", "tenant", "event_type", "age")}
    monkeypatch.setattr(dlq_cli.dlq, "stats", lambda settings, selection: {"total": 1, **counts})
    out = terminal(monkeypatch, dlq_cli)
    done = CliRunner().invoke(cli.app, ["dlq", "stats"])
    assert done.exit_code == 0, done.output
    shown_as_text(out.getvalue())


def test_a_null_cell_reads_null(monkeypatch: pytest.MonkeyPatch) -> None:
    out = terminal(monkeypatch, sinks_cli)
    sinks_cli._print_table({"columns": ["a", "b"], "rows": [[None, "-"]], "row_count": 1,
                            "elapsed_ms": 1.0})  # fmt: skip
    assert "NULL" in out.getvalue()
