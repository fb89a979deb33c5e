"""The real local stack for integration tests, started once per session.

If ``KAFKA_BOOTSTRAP`` and ``SCHEMA_REGISTRY_URL`` are set, the tests use that existing stack
instead (tests that must restart the broker or registry then skip, saying why). Otherwise a
LocalStack runs in a temporary directory on free ports, so a developer's own stack on the
default ports is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from ops.stack.local import LocalStack
from sealstream.settings import KafkaSettings, RegistrySettings, StackSettings

# Test ports come from below the kernel's ephemeral range: a client that keeps reconnecting to a
# stopped broker on an ephemeral port can be handed that very port as its own source port
# (a TCP self-connect), and the restarted broker then finds its port taken. The band also
# stays clear of the developer defaults (18080-19093) and the benchmarks (28192-29293).
TEST_PORTS = range(30000, 32768)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """Distinct free ports outside the ephemeral range (all held until every one is chosen)."""
    band = range(TEST_PORTS.start, min(TEST_PORTS.stop, _ephemeral_low()))
    sockets: list[socket.socket] = []
    try:
        for port in random.sample(band, k=min(len(band), 200)):
            if len(sockets) == count:
                break
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        while len(sockets) < count:  # no band on this machine: let the kernel choose
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class StackHandle:
    bootstrap: str
    registry_url: str
    local: LocalStack | None  # None for an external stack

    def kafka_settings(self) -> KafkaSettings:
        """The local stack's admin (a super user: the tests make and read their own topics and
        groups); an external stack's from the environment (``SEALSTREAM_KAFKA_*``)."""
        if self.local is None:
            return KafkaSettings(bootstrap_servers=self.bootstrap)
        return self.local.settings.kafka_settings("admin")

    def kafka_env(self) -> dict[str, str]:
        """The same as environment variables, for a process the test starts."""
        env = {"SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        if self.local is not None:
            from sealstream.principals import role_env

            env.update(role_env(self.local.settings, "admin"))
        return env

    def registry_settings(self) -> RegistrySettings:
        """With the local stack's operator credential (it may register schemas); an external
        stack's comes from the environment (``SEALSTREAM_REGISTRY_BASIC_AUTH_*``)."""
        if self.local is None:
            return RegistrySettings(url=self.registry_url)
        operator = self.local.settings.registry_operator_file
        return RegistrySettings(url=self.registry_url, basic_auth_file=operator)

    def registry_config(self) -> dict[str, Any]:
        """confluent-kafka's SchemaRegistryClient configuration, credential included."""
        return self.registry_settings().client_config()

    def registry_auth(self) -> tuple[str, str] | None:
        """The same credential for a plain HTTP client (httpx's ``auth=``)."""
        info = self.registry_config().get("basic.auth.user.info")
        if info is None:
            return None
        user, _, password = str(info).partition(":")
        return user, password


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    bootstrap, registry = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        yield StackHandle(bootstrap, registry, None)
        return
    if bootstrap or registry:
        raise pytest.UsageError(
            "set both KAFKA_BOOTSTRAP and SCHEMA_REGISTRY_URL to test against an existing "
            "stack, or neither to let the tests start their own"
        )
    directory: Path = tmp_path_factory.mktemp("stack")
    kafka_port, controller_port, registry_port = free_ports(3)
    settings = StackSettings(
        dir=directory,
        kafka_port=kafka_port,
        controller_port=controller_port,
        registry_port=registry_port,
        default_partitions=3,
    )
    local = LocalStack(settings)
    try:
        local.up()
        yield StackHandle(local.bootstrap, local.registry_url, local)
    finally:
        local.down()


@pytest.fixture
def fresh_topic(stack: StackHandle) -> Iterator[str]:
    """A new topic with 3 partitions, unique to the test; deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient(stack.kafka_settings().client_config())
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(30)
    yield name
    # Tidy up (an external stack is shared); a test that stopped the broker may leave it be.
    with contextlib.suppress(KafkaException, TimeoutError):
        admin.delete_topics([name], operation_timeout=10)[name].result(15)


@pytest.fixture
def fresh_group() -> str:
    """A consumer group id no other test uses."""
    return f"test-group-{uuid.uuid4().hex[:12]}"


# -- the gateway, in-process on a real port ------------------------------------------------


@dataclass
class GatewayHandle:
    url: str
    gateway: Any
    auth: Any
    keyring: Any
    stack: StackHandle

    def token(self, tenant: str = "acme", **kwargs: Any) -> str:
        from sealstream.auth import issue_token

        scopes = kwargs.pop("scopes", ["events:write", "receipts:read"])
        return issue_token(
            self.keyring, self.auth, kwargs.pop("sub", "svc-test"), tenant, scopes, **kwargs
        )

    def raw_mark(self) -> dict[int, int]:
        """events.raw's end offset per partition: where :meth:`raw_events_since` counts from."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            self.stack.kafka_settings().client_config(group_id=f"wm-{uuid.uuid4().hex}")
        )
        try:
            topic = consumer.list_topics("events.raw", timeout=10).topics["events.raw"]
            return {
                p: consumer.get_watermark_offsets(TopicPartition("events.raw", p), timeout=10)[1]
                for p in topic.partitions
            }
        finally:
            consumer.close()

    def raw_events_since(self, mark: dict[int, int]) -> int:
        """How many events were written to events.raw after ``mark``: a frame counts its
        events (schemas/frames.py), a plain record one."""
        from confluent_kafka import Consumer, TopicPartition

        from schemas.frames import decode_frame, is_frame

        end = self.raw_mark()
        consumer = Consumer(
            self.stack.kafka_settings().client_config(group_id=f"wm-{uuid.uuid4().hex}")
        )
        events = 0
        try:
            for partition, stop in end.items():
                start = mark.get(partition, 0)
                if stop <= start:
                    continue
                tp = TopicPartition("events.raw", partition, start)
                consumer.assign([tp])
                # until the position passes ``stop`` (a transaction marker is never returned)
                while consumer.position([tp])[0].offset < stop:
                    msg = consumer.poll(15)
                    assert msg is not None, f"events.raw[{partition}] {start}..{stop} unread"
                    if msg.error() is not None or (msg.offset() or 0) >= stop:
                        continue
                    value = msg.value()
                    events += len(decode_frame(value)) if is_frame(value) else 1
            return events
        finally:
            consumer.close()


def register_repo_schemas(stack: StackHandle) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from schemas.catalog import Catalog

    with SchemaRegistryClient(stack.registry_config()) as client:
        for subject, schema in Catalog().subjects().items():
            client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))


@pytest.fixture(scope="session")
def gateway(
    stack: StackHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayHandle]:
    import threading
    import time

    import httpx
    import uvicorn

    from producers.app import build_gateway, create_app
    from sealstream.auth import Keyring, auth_settings
    from sealstream.settings import GatewaySettings, KeySettings

    register_repo_schemas(stack)
    keys = KeySettings(dir=tmp_path_factory.mktemp("keys"))
    auth = auth_settings(keys)
    settings = GatewaySettings(
        port=free_port(),
        policy_file=Path(__file__).resolve().parents[2] / "config" / "policy.yaml",
        produce_timeout_s=4.0,
        retry_after_s=2,
    )
    built = build_gateway(settings, auth, stack.kafka_settings(), stack.registry_settings(), keys)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(built),
            host="127.0.0.1",
            port=settings.port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="gateway-under-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield GatewayHandle(url, built, auth, Keyring.from_settings(auth), stack)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


# -- an S3 API endpoint (moto in server mode: real HTTP, the S3 REST protocol) --------------


@dataclass
class S3Handle:
    endpoint: str
    bucket: str
    client: Any

    def keys(self, prefix: str) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import subprocess
    import sys
    import time

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.fixture
def s3(s3_server: str) -> S3Handle:
    """A fresh bucket on the S3 endpoint."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    bucket = f"cold-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3Handle(s3_server, bucket, client)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's outcome lines (sent / acknowledged / stored / duplicates / ...)."""
    from tests.integration.pipeline import REPORTED

    if REPORTED:
        terminalreporter.section("fault suite outcomes")
        for line in REPORTED:
            terminalreporter.write_line(line)
