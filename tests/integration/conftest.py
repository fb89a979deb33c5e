"""The real local stack for integration tests, started once per session.

If ``KAFKA_BOOTSTRAP`` and ``SCHEMA_REGISTRY_URL`` are set, the tests use that existing stack
instead (tests that must restart the broker or registry then skip, saying why). Otherwise a
LocalStack runs in a temporary directory on free ports, so a developer's own stack on the
default ports is never touched.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from sealstream.settings import KafkaSettings, RegistrySettings, StackSettings
from sealstream.stack.local import LocalStack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StackHandle:
    bootstrap: str
    registry_url: str
    local: LocalStack | None  # None for an external stack

    def kafka_settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap)

    def registry_settings(self) -> RegistrySettings:
        return RegistrySettings(url=self.registry_url)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    bootstrap, registry = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        yield StackHandle(bootstrap, registry, None)
        return
    directory: Path = tmp_path_factory.mktemp("stack")
    settings = StackSettings(
        dir=directory,
        kafka_port=free_port(),
        controller_port=free_port(),
        registry_port=free_port(),
        default_partitions=3,
    )
    local = LocalStack(settings)
    try:
        local.up()
        yield StackHandle(local.bootstrap, local.registry_url, local)
    finally:
        local.down()


@pytest.fixture
def fresh_topic(stack: StackHandle) -> str:
    """A new topic with 3 partitions, unique to the test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient(stack.kafka_settings().client_config())
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(30)
    return name


@pytest.fixture
def fresh_group() -> str:
    return f"test-group-{uuid.uuid4().hex[:12]}"
