"""Kafka principals of the secured local stack: the ACL table's invariants, and commands run by
hand picking up the stack's credentials (for the stack's own brokers only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.settings import Settings
from ops.stack.local import LocalStack
from ops.stack.security import acls
from sealstream.principals import ROLES, secret_file
from sealstream.settings import StackSettings, TopicSettings


def _writers(topic: str) -> set[str]:
    return {
        role
        for role, grants in acls().items()
        for g in grants
        if g.resource == "topic" and ("WRITE" in g.operations or "ALL" in g.operations)
        if g.name == topic or (g.prefixed and topic.startswith(g.name))
    }


def test_each_pipeline_topic_has_exactly_its_writers() -> None:
    t = TopicSettings()
    assert _writers(t.raw) == {"gateway", "operator"}
    assert _writers(t.signed) == {"worker"}
    assert _writers(t.checkpoints) == {"worker"}
    assert _writers(t.receipts) == {"gateway"}
    assert _writers(t.schemas) == {"registry"}
    assert _writers(t.signed_dlq) == {"sink-clickhouse", "sink-objects"}
    assert set(acls()) == set(ROLES)
    for role, grants in acls().items():  # nobody but the operator reads every topic
        wildcard = [g for g in grants if g.name == "*"]
        assert not wildcard or role == "operator"
        assert all(
            op != "ALL" or g.name == "sealstream-processor-" for g in grants for op in g.operations
        )


def test_no_role_may_use_the_long_lived_group_of_another() -> None:
    owned = {"worker": "sealstream-processor", "sink-clickhouse": "sealstream-sink-clickhouse",
             "sink-objects": "sealstream-sink-objects"}  # fmt: skip
    for role, grants in acls().items():
        denied = {g.name for g in grants if g.resource == "group" and g.deny}
        assert denied == {group for owner, group in owned.items() if owner != role}, role
        wanted = {"READ"} if role == "operator" else {"READ", "DESCRIBE"}  # verify reads offsets
        assert all(set(g.operations) == wanted for g in grants if g.deny), role
    operator = acls()["operator"]
    assert any(
        g.resource == "transactional_id" and g.name == "sealstream-dlq-replay-" for g in operator
    )


def test_a_command_by_hand_uses_the_secured_stacks_operator_for_its_brokers_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SEALSTREAM_KAFKA_SECURITY_PROTOCOL", "SEALSTREAM_KAFKA_SASL_USERNAME",
                 "SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    stack = StackSettings(dir=tmp_path, kafka_port=31555)
    LocalStack(stack).save_settings()
    stack.kafka_settings("operator")  # makes the password file, as `stack up` does
    monkeypatch.setenv("SEALSTREAM_STACK_DIR", str(tmp_path))
    monkeypatch.setenv("SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap_servers)
    config = Settings().kafka.client_config()
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.username"] == "operator"
    assert config["sasl.password"] == secret_file(stack.keys_dir, "operator").read_text()
    worker = Settings()
    worker.kafka_role = "worker"
    assert worker.kafka.client_config()["sasl.username"] == "worker"
    monkeypatch.setenv("SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS", "broker.example:9092")
    assert "sasl.password" not in Settings().kafka.client_config()  # not the stack's brokers
