"""Kafka least privilege against a real secured broker (SASL_SSL, SCRAM users per role, the
standard authorizer): who may write and read which topic.

The stack here is its own, secured whatever the session's stack is, so these checks always run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from ops.stack.local import LocalStack
from sealstream.principals import GATEWAY, OPERATOR, SINK_CLICKHOUSE, SINK_OBJECTS, WORKER
from sealstream.settings import KafkaSettings, StackSettings
from tests.integration.conftest import free_ports

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    kafka, controller, registry = free_ports(3)
    settings = StackSettings(
        dir=tmp_path_factory.mktemp("secured"), kafka_port=kafka, controller_port=controller,
        registry_port=registry, default_partitions=1, security="sasl_ssl",
    )  # fmt: skip
    stack = LocalStack(settings)
    try:
        stack.up()
        yield settings
    finally:
        stack.down()


def _produce(config: dict[str, Any], topic: str) -> KafkaError | None:
    """Write one record; the error it got (None: written)."""
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 15000, "logger": _quiet()})
    producer.produce(topic, b"forged", key=b"acme/x", on_delivery=lambda err, _: errors.append(err))
    producer.flush(20)
    assert errors, "no delivery report"
    return errors[0]


def _read(config: dict[str, Any], topic: str) -> KafkaError | None:
    """Fetch from partition 0; the error it got (None: it could read)."""
    consumer = Consumer(
        {**config, "group.id": f"sealstream-test-{uuid.uuid4().hex}", "logger": _quiet(),
         "auto.offset.reset": "earliest", "enable.partition.eof": True}
    )  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, 0)])
        for _ in range(20):
            msg = consumer.poll(1)
            if msg is None:
                continue
            error = msg.error()
            if error is None or error.code() == KafkaError._PARTITION_EOF:
                return None
            return error
        raise AssertionError(f"no answer reading {topic}")
    finally:
        consumer.close()


def _quiet() -> Any:
    import logging

    logger = logging.getLogger("kafka-security-test")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def _as(stack: StackSettings, user: str) -> dict[str, Any]:
    return stack.kafka_settings(user).client_config()


DENIED = (KafkaError.TOPIC_AUTHORIZATION_FAILED,)


def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(
    secured: StackSettings, tmp_path: Path
) -> None:
    plain = KafkaSettings(bootstrap_servers=secured.bootstrap_servers).client_config()
    assert _produce(plain, "events.raw") is not None  # PLAINTEXT: no listener speaks it
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-password")
    wrong.chmod(0o600)
    config = secured.kafka_settings(GATEWAY).model_copy(update={"sasl_password_file": wrong})
    error = _produce(config.client_config(), "events.raw")
    assert error is not None and error.code() != KafkaError.NO_ERROR


def test_each_role_writes_only_its_own_topics(secured: StackSettings) -> None:
    allowed = {
        GATEWAY: ["events.raw", "audit.decisions", "receipts"],
        WORKER: ["events.signed", "events.raw.dlq", "audit.checkpoints"],
        SINK_OBJECTS: ["events.signed.dlq"],
        OPERATOR: ["events.raw", "dlq.replays"],  # replays write to events.raw (docs/security.md)
    }
    denied = {
        GATEWAY: [
            "events.signed",
            "audit.checkpoints",
            "tokens.revoked",
            "_schemas",
            "dlq.replays",
        ],
        WORKER: ["events.raw", "receipts", "_schemas", "tokens.revoked"],
        SINK_CLICKHOUSE: ["events.raw", "events.signed", "receipts"],
        SINK_OBJECTS: ["events.raw", "events.signed", "audit.decisions"],
        OPERATOR: ["events.signed", "audit.checkpoints", "_schemas"],
    }
    for user, topics in allowed.items():
        for topic in topics:
            assert _produce(_as(secured, user), topic) is None, (user, topic)
    for user, topics in denied.items():
        for topic in topics:
            error = _produce(_as(secured, user), topic)
            assert error is not None and error.code() in DENIED, (user, topic, error)


def test_each_role_reads_only_what_it_needs(secured: StackSettings) -> None:
    assert _read(_as(secured, WORKER), "events.raw") is None
    assert _read(_as(secured, SINK_CLICKHOUSE), "events.signed") is None
    assert _read(_as(secured, OPERATOR), "events.signed") is None
    for user, topic in [(GATEWAY, "events.raw"), (GATEWAY, "events.signed"),
                        (SINK_OBJECTS, "events.raw"), (WORKER, "_schemas")]:  # fmt: skip
        error = _read(_as(secured, user), topic)
        assert error is not None and error.code() in DENIED, (user, topic, error)


def test_replays_are_the_operators_and_no_role_commits_in_another_roles_group(
    secured: StackSettings,
) -> None:
    from confluent_kafka import KafkaException

    def init(user: str) -> None:
        producer = Producer(
            {**_as(secured, user), "transactional.id": "sealstream-dlq-replay-events.raw.dlq",
             "logger": _quiet()}
        )  # fmt: skip
        producer.init_transactions(20)

    init(OPERATOR)  # what `sealstream dlq replay` and `purge` do first
    with pytest.raises(KafkaException, match="TRANSACTIONAL_ID_AUTHORIZATION_FAILED"):
        init(GATEWAY)

    def commit(user: str) -> None:
        consumer = Consumer(
            {**_as(secured, user), "group.id": "sealstream-sink-clickhouse", "logger": _quiet()}
        )
        try:
            consumer.commit(offsets=[TopicPartition("events.signed", 0, 0)], asynchronous=False)
        finally:
            consumer.close()

    commit(SINK_CLICKHOUSE)  # its owner may
    for user in (GATEWAY, OPERATOR):  # a commit would make the ClickHouse sink skip records
        # refused as the group's coordinator is looked up (the broker denies DESCRIBE on it)
        with pytest.raises(KafkaException, match=r"GROUP_AUTHORIZATION_FAILED|Waiting for coord"):
            commit(user)
