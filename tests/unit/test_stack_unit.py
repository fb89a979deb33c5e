"""Local stack pieces that need no process: broker config, pid files, jar cache, saved ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ops.stack import kafka as runtime
from ops.stack.local import LocalStack
from ops.stack.process import ManagedProcess
from sealstream.settings import StackSettings


def test_server_properties_use_configured_ports(tmp_path: Path) -> None:
    settings = StackSettings(
        dir=tmp_path, kafka_port=31000, controller_port=31001, security="plaintext"
    )
    text = runtime.server_properties(settings, tmp_path / "data")
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:31000,CONTROLLER://127.0.0.1:31001"
    assert props["process.roles"] == "broker,controller"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_a_secured_broker_authenticates_every_listener_and_denies_by_default(
    tmp_path: Path,
) -> None:
    from sealstream.principals import secret_file

    settings = StackSettings(dir=tmp_path, kafka_port=31000, controller_port=31001)
    assert settings.security == "sasl_ssl"  # the default
    text = runtime.server_properties(settings, tmp_path / "data")
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL"
    assert "PLAINTEXT" not in props["listeners"]
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:broker;User:admin"
    assert props["ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----\\n")
    for user in ("broker", "admin"):  # passwords only in the JAAS lines of an owner-only file
        secret = secret_file(settings.keys_dir, user).read_text()
        assert [k for k, v in props.items() if secret in v] == [
            "listener.name.sasl_ssl.plain.sasl.jaas.config",
            "listener.name.controller.plain.sasl.jaas.config",
        ]
    client = settings.kafka_settings("gateway").client_config()
    assert client["security.protocol"] == "SASL_SSL" and client["sasl.mechanism"] == "SCRAM-SHA-512"
    assert client["sasl.username"] == "gateway" and client["ssl.ca.location"].endswith("ca.pem")


def test_a_three_broker_stack_is_a_replicated_kraft_quorum(tmp_path: Path) -> None:
    settings = StackSettings(
        dir=tmp_path, kafka_port=29092, controller_port=29093, brokers=3, more_kafka_ports=[29500]
    )
    assert settings.kafka_ports == [29092, 29500, 29112]  # given, then kafka_port + 10 * n
    assert settings.controller_ports == [29093, 29103, 29113]
    assert settings.bootstrap_servers == "127.0.0.1:29092,127.0.0.1:29500,127.0.0.1:29112"
    assert settings.kafka_settings().replication_factor == 3
    lines = dict(
        line.split("=", 1)
        for line in runtime.server_properties(settings, tmp_path / "d", node=2).splitlines()
    )
    assert lines["node.id"] == "2"
    assert lines["listeners"] == "SASL_SSL://127.0.0.1:29500,CONTROLLER://127.0.0.1:29103"
    assert lines["controller.quorum.voters"] == (
        "1@127.0.0.1:29093,2@127.0.0.1:29103,3@127.0.0.1:29113"
    )
    assert "controller.quorum.bootstrap.servers" not in lines
    for name in ("default.replication.factor", "offsets.topic.replication.factor",
                 "transaction.state.log.replication.factor"):  # fmt: skip
        assert lines[name] == "3", name
    assert lines["min.insync.replicas"] == lines["transaction.state.log.min.isr"] == "2"
    assert lines["unclean.leader.election.enable"] == "false"
    single = StackSettings(dir=tmp_path)
    one = runtime.server_properties(single, tmp_path / "d")
    assert "controller.quorum.bootstrap.servers" in one and "quorum.voters" not in one
    assert "min.insync.replicas=1" in one and single.kafka_settings().replication_factor == 1


def test_kafka_version_is_pinned_in_the_pom() -> None:
    version = runtime.kafka_version()
    assert version.split(".")[0] in {"3", "4"} and version.count(".") == 2


def test_jar_cache_marker(tmp_path: Path) -> None:
    settings = StackSettings(cache_dir=tmp_path)
    libs = runtime.libs_dir(settings)
    assert not runtime.jars_cached(settings)
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-x.jar").write_bytes(b"")
    assert not runtime.jars_cached(settings)  # jars without the marker: half-finished download
    (libs / runtime.COMPLETE_MARKER).write_text("x")
    assert runtime.jars_cached(settings)
    assert runtime.resolve_jars(settings) == libs  # no Maven run when cached


def test_pid_file_staleness(tmp_path: Path) -> None:
    managed = ManagedProcess(
        "sleeper", tmp_path / "p.pid", tmp_path / "p.log", "sleep-marker", tmp_path
    )
    assert managed.pid() is None
    managed.pid_file.write_text("999999\n")  # no such process
    assert managed.pid() is None and not managed.pid_file.exists()
    managed.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not ours (no marker)
    assert managed.pid() is None
    pid = managed.start(
        [sys.executable, "-c", "import time, sys; time.sleep(60)", "sleep-marker"], dict(os.environ)
    )
    assert managed.pid() == pid
    assert managed.stop(timeout_s=5)
    assert managed.pid() is None


def test_saved_settings_round_trip(tmp_path: Path) -> None:
    settings = StackSettings(dir=tmp_path, kafka_port=32000, registry_port=32001)
    LocalStack(settings).save_settings()
    saved = LocalStack.saved_overrides(tmp_path)
    assert saved["kafka_port"] == 32000 and saved["registry_port"] == 32001
    assert LocalStack.saved_overrides(tmp_path / "missing") == {}


def test_cli_help_on_every_command() -> None:
    for args in (
        ["--help"],
        ["stack", "--help"],
        ["stack", "up", "--help"],
        ["schemas", "check", "--help"],
        ["registry", "serve", "--help"],
        ["topics", "create", "--help"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "ops.cli", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout


def test_port_in_use_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    import socket

    import pytest

    from ops.stack.process import StackError

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        stack = LocalStack(StackSettings(dir=tmp_path, kafka_port=port))
        with pytest.raises(StackError, match=f"port {port} .* in use") as raised:
            stack._check_port_free(port, "Kafka")
        assert "ephemeral range" in str(raised.value)  # the kernel chose it: say why that hurts
    stack._check_port_free(port, "Kafka")  # free again once the listener is gone


def test_pid_file_of_another_stacks_process_is_stale(tmp_path: Path) -> None:
    """Same command line, other stack directory (cwd): a pid reused by a sibling stack."""
    other, ours = tmp_path / "other", tmp_path / "ours"
    other.mkdir()
    ours.mkdir()
    theirs = ManagedProcess("sleeper", other / "p.pid", other / "p.log", "sleep-marker", other)
    pid = theirs.start(
        [sys.executable, "-c", "import time; time.sleep(60)", "sleep-marker"], dict(os.environ)
    )
    try:
        mine = ManagedProcess("sleeper", ours / "p.pid", ours / "p.log", "sleep-marker", ours)
        mine.pid_file.write_text(f"{pid}\n")
        assert mine.pid() is None and not mine.pid_file.exists()
        assert theirs.pid() == pid
    finally:
        assert theirs.kill()


def test_a_child_that_exited_is_reaped_and_seen_as_exited(tmp_path: Path) -> None:
    from ops.stack import process

    managed = ManagedProcess(
        "quick", tmp_path / "p.pid", tmp_path / "p.log", "quick-marker", tmp_path
    )
    pid = managed.start([sys.executable, "-c", "print('bye')", "quick-marker"], dict(os.environ))
    deadline = time.monotonic() + 10
    while not managed.exited() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert managed.exited()
    assert pid not in process._CHILDREN  # no zombie left behind
    assert "bye" in managed.log_file.read_text()
    assert not managed.stop(timeout_s=1)  # nothing to stop
