"""The local stack itself: idempotent up, data surviving down/up, status and logs commands."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from typer.testing import CliRunner

from ops.cli import app
from ops.stack.local import LocalStack
from ops.stack.process import StackError

pytestmark = pytest.mark.integration


def _needs_local(stack: Any) -> Any:
    if stack.local is None:
        pytest.skip("an external stack (KAFKA_BOOTSTRAP set) is not managed by the tests")
    return stack.local


def test_up_twice_is_idempotent(stack: Any) -> None:
    local = _needs_local(stack)
    before = {s.name: s.pid for s in local.status()}
    started = time.monotonic()
    statuses = local.up()
    assert time.monotonic() - started < 5
    assert {s.name: s.pid for s in statuses} == before
    assert all(s.healthy for s in statuses)


def test_cli_status_and_logs(stack: Any) -> None:
    local = _needs_local(stack)
    runner = CliRunner()
    result = runner.invoke(app, ["stack", "status", "--json", "--dir", str(local.dir)])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["kafka"]["healthy"] and rows["registry"]["healthy"]
    assert rows["kafka"]["address"] == stack.bootstrap  # ports came from the saved stack.json
    logs = runner.invoke(app, ["stack", "logs", "kafka", "-n", "20", "--dir", str(local.dir)])
    assert logs.exit_code == 0
    # the last 20 lines of the broker's log (what other tests did to it meanwhile varies)
    tail = local.kafka.log_file.read_text(errors="replace").splitlines()[-25:]
    shown = logs.output.splitlines()
    assert len(shown) == 20 and shown[0] in tail and "INFO" in logs.output
    bad = runner.invoke(app, ["stack", "logs", "zookeeper", "--dir", str(local.dir)])
    assert bad.exit_code == 2


def _produce_marker(stack: Any, topic: str) -> bytes:
    marker = uuid.uuid4().hex.encode()
    producer = Producer(stack.kafka_settings().client_config(acks="all"))
    producer.produce(topic, value=marker)
    assert producer.flush(10) == 0
    return marker


def _assert_still_there(stack: Any, topic: str, group: str, marker: bytes) -> None:
    consumer = Consumer(
        stack.kafka_settings().client_config(group_id=group, auto_offset_reset="earliest")
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1)
            if msg is not None and msg.error() is None and msg.value() == marker:
                return
        pytest.fail("the record written before the restart is gone")
    finally:
        consumer.close()


def test_data_survives_down_and_up(stack: Any, fresh_topic: str, fresh_group: str) -> None:
    local = _needs_local(stack)
    marker = _produce_marker(stack, fresh_topic)

    assert local.down()
    assert not local.running()
    assert not any(s.healthy for s in local.status())
    assert not local.down()  # already down: nothing to do
    local.up()

    _assert_still_there(stack, fresh_topic, fresh_group, marker)


def test_broker_killed_and_restarted(stack: Any, fresh_topic: str, fresh_group: str) -> None:
    local = _needs_local(stack)
    marker = _produce_marker(stack, fresh_topic)
    old_pid = local.kafka.pid()

    local.kill_broker()
    kafka = local.status()[0]
    assert kafka.pid is None and not kafka.healthy

    local.restart_broker()
    statuses = local.status()
    assert all(s.healthy for s in statuses), statuses
    assert statuses[0].pid not in (None, old_pid)
    _assert_still_there(stack, fresh_topic, fresh_group, marker)


def test_a_running_stack_keeps_its_ports(stack: Any) -> None:
    local = _needs_local(stack)
    other = LocalStack(
        local.settings.model_copy(update={"kafka_port": local.settings.kafka_port + 1})
    )
    with pytest.raises(StackError, match="run `sealstream stack down` first"):
        other.up()
    assert all(s.healthy for s in local.status())


def test_pipeline_topics_exist_with_their_policies(stack: Any) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

    admin = AdminClient(stack.kafka_settings().client_config())
    topics = admin.list_topics(timeout=10).topics
    for name in ("events.raw", "events.signed", "events.raw.dlq", "_schemas", "receipts"):
        assert name in topics
    resource = ConfigResource("topic", "_schemas")
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["cleanup.policy"].value == "compact"


def test_partition_for_is_the_partitioner_of_keyed_records(stack: Any, fresh_topic: str) -> None:
    """The gateway places its frames by ``partition_for``; a dead letter replayed one record
    at a time is placed by librdkafka from its key. Both must pick the same partition, or a
    replayed copy of an event would meet another chain's dedup window."""
    from sealstream.topics import partition_count, partition_for

    partitions = partition_count(stack.kafka_settings(), fresh_topic)
    assert partitions == 3
    producer = Producer(stack.kafka_settings().client_config())
    placed: dict[bytes, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None
        placed[msg.key()] = msg.partition()

    keys = [f"acme/{uuid.uuid4()}".encode() for _ in range(60)]
    for key in keys:
        producer.produce(fresh_topic, b"x", key, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert placed == {key: partition_for(key, partitions) for key in keys}
    assert len(set(placed.values())) == 3
