"""The `sealstream stack` commands and settings precedence, on stacks that are not running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.cli.stack import stack_settings
from ops.stack.local import LocalStack
from ops.stack.process import StackError
from sealstream.settings import StackSettings


def _saved(directory: Path, **ports: int) -> None:
    LocalStack(StackSettings(dir=directory, **ports)).save_settings()


def test_up_settings_environment_and_options_beat_the_saved_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _saved(tmp_path, kafka_port=31000, registry_port=31001)
    assert stack_settings(tmp_path).kafka_port == 31000  # saved beats the default
    monkeypatch.setenv("SEALSTREAM_STACK_KAFKA_PORT", "32000")
    settings = stack_settings(tmp_path)
    assert (settings.kafka_port, settings.registry_port) == (32000, 31001)
    assert stack_settings(tmp_path, kafka_port=33000).kafka_port == 33000


def test_status_settings_describe_the_saved_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _saved(tmp_path, kafka_port=31000)
    monkeypatch.setenv("SEALSTREAM_STACK_KAFKA_PORT", "32000")
    assert stack_settings(tmp_path, saved_first=True).kafka_port == 31000


def test_stack_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALSTREAM_STACK_DIR", str(tmp_path))
    _saved(tmp_path, kafka_port=31000)
    assert stack_settings().dir == tmp_path and stack_settings().kafka_port == 31000


def test_a_running_stack_refuses_other_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _saved(tmp_path, kafka_port=31000)
    stack = LocalStack(StackSettings(dir=tmp_path, kafka_port=32000))
    monkeypatch.setattr(LocalStack, "running", lambda self: True)
    with pytest.raises(StackError, match=r"running with kafka_port 31000 \(asked for 32000\)"):
        stack.up()
    assert LocalStack.saved_overrides(tmp_path)["kafka_port"] == 31000  # record unchanged


def test_status_of_a_stopped_stack(tmp_path: Path) -> None:
    _saved(tmp_path, kafka_port=31000, registry_port=31001)
    result = CliRunner().invoke(app, ["stack", "status", "--json", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    rows = json.loads(result.output)
    assert [(r["name"], r["pid"], r["healthy"]) for r in rows] == [
        ("kafka", None, False),
        ("registry", None, False),
    ]
    assert rows[0]["address"] == "127.0.0.1:31000"


def test_down_of_a_stopped_stack_succeeds(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stack", "down", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "not running" in result.output


def test_logs_prints_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "kafka.log"
    log.parent.mkdir()
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    runner = CliRunner()
    result = runner.invoke(app, ["stack", "logs", "kafka", "-n", "3", "--dir", str(tmp_path)])
    assert result.exit_code == 0
    assert result.output.splitlines() == ["line 97", "line 98", "line 99"]
    missing = runner.invoke(app, ["stack", "logs", "registry", "--dir", str(tmp_path)])
    assert missing.exit_code == 1 and "no log yet" in missing.output
    unknown = runner.invoke(app, ["stack", "logs", "zookeeper", "--dir", str(tmp_path)])
    assert unknown.exit_code == 2
