"""The registry against a real broker, driven by confluent-kafka's own SchemaRegistryClient."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

pytestmark = pytest.mark.integration


def record(name: str, *fields: dict[str, Any]) -> Schema:
    return Schema(json.dumps({"type": "record", "name": name, "fields": list(fields)}), "AVRO")


V1 = record("Order", {"name": "id", "type": "string"})
V2 = record(
    "Order",
    {"name": "id", "type": "string"},
    {"name": "note", "type": ["null", "string"], "default": None},
)
BREAKING = record("Order", {"name": "id", "type": "long"})


@pytest.fixture
def subject() -> str:
    return f"it-{uuid.uuid4().hex[:10]}-value"


@pytest.fixture
def client(stack: Any) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient(stack.registry_config()) as sr:
        yield sr


def test_a_change_without_the_operators_credential_is_401_and_changes_nothing(
    stack: Any, client: SchemaRegistryClient, subject: str
) -> None:
    if stack.local is None:
        pytest.skip("an external stack's registry is configured by its owner")
    first = client.register_schema(subject, V1)
    with (
        SchemaRegistryClient({"url": stack.registry_url}) as anonymous,
        SchemaRegistryClient({"url": stack.registry_url, "basic.auth.user.info": "u:x"}) as wrong,
    ):
        _refused_and_unchanged(stack, anonymous, wrong, subject, first)
    assert client.register_schema(subject, V2) != first  # the operator still may


def _refused_and_unchanged(
    stack: Any,
    anonymous: SchemaRegistryClient,
    wrong: SchemaRegistryClient,
    subject: str,
    first: int,
) -> None:
    attempts = [
        lambda c: c.register_schema(subject, V2),
        lambda c: c.delete_subject(subject),
        lambda c: c.delete_version(subject, 1),
        lambda c: c.set_compatibility(subject, "NONE"),
        lambda c: c.set_compatibility(None, "NONE"),
    ]
    for anyone in (anonymous, wrong):
        for attempt in attempts:
            with pytest.raises(SchemaRegistryError) as info:
                attempt(anyone)
            assert info.value.http_status_code == 401 and info.value.error_code == 40101
    with httpx.Client(base_url=stack.registry_url, timeout=10) as http:  # and over plain HTTP
        for method, path in [("PUT", "/config"), ("DELETE", f"/subjects/{subject}")]:
            answer = http.request(method, path, json={"compatibility": "NONE"})
            assert answer.status_code == 401 and "www-authenticate" in answer.headers
    # nothing changed; reads and lookups need no credential
    assert anonymous.get_versions(subject) == [1]
    assert anonymous.lookup_schema(subject, V1).schema_id == first
    assert anonymous.get_compatibility() == "BACKWARD"


def test_register_lookup_evolve_with_confluent_client(
    client: SchemaRegistryClient, subject: str
) -> None:
    first = client.register_schema(subject, V1)
    assert client.register_schema(subject, V1) == first  # idempotent: same id
    assert client.lookup_schema(subject, V1).version == 1
    assert client.test_compatibility(subject, V2) is True
    assert client.test_compatibility(subject, BREAKING) is False
    second = client.register_schema(subject, V2)
    assert second != first
    latest = client.get_latest_version(subject)
    assert (latest.version, latest.schema_id) == (2, second)
    assert json.loads(client.get_schema(first).schema_str) == json.loads(V1.schema_str)
    assert client.get_versions(subject) == [1, 2]
    assert subject in client.get_subjects()
    with pytest.raises(SchemaRegistryError) as info:
        client.register_schema(subject, BREAKING)
    assert info.value.http_status_code == 409 and info.value.error_code == 409


def test_config_and_delete_with_confluent_client(
    client: SchemaRegistryClient, subject: str
) -> None:
    client.register_schema(subject, V1)
    assert client.set_compatibility(subject, "NONE")["compatibility"] == "NONE"
    assert client.get_compatibility(subject) == "NONE"
    client.register_schema(subject, BREAKING)  # allowed under NONE
    assert client.delete_version(subject, 1) == 1
    assert client.get_versions(subject) == [2]
    assert client.delete_subject(subject) == [2]
    with pytest.raises(SchemaRegistryError) as info:
        client.get_latest_version(subject)
    assert info.value.error_code == 40401
    assert client.delete_subject(subject, permanent=True) == [1, 2]


def test_error_codes_over_http(stack: Any, subject: str) -> None:
    url = stack.registry_url
    ct = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
    with httpx.Client(base_url=url, headers=ct, timeout=10, auth=stack.registry_auth()) as http:
        http.post(f"/subjects/{subject}/versions", json={"schema": V1.schema_str})
        checks = [
            (http.get(f"/subjects/{subject}x/versions"), 404, 40401),
            (http.get(f"/subjects/{subject}/versions/9"), 404, 40402),
            (http.get("/schemas/ids/987654321"), 404, 40403),
            (
                http.post(f"/subjects/{subject}/versions", json={"schema": BREAKING.schema_str}),
                409,
                409,
            ),
            (
                http.post(f"/subjects/{subject}/versions", json={"schema": '{"type":"nope"}'}),
                422,
                42201,
            ),
            (http.put(f"/config/{subject}", json={"compatibility": "WHENEVER"}), 422, 42203),
            (
                http.post(
                    f"/subjects/{subject}/versions", json={"schema": "{}", "schemaType": "PROTOBUF"}
                ),
                422,
                42201,
            ),
        ]
        for response, status, code in checks:
            assert response.status_code == status, response.text
            assert response.json()["error_code"] == code
        # None of the bad requests changed anything.
        assert http.get(f"/subjects/{subject}/versions").json() == [1]


def _start_registry(stack: Any, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **stack.kafka_env(),
        "SEALSTREAM_REGISTRY_HOST": "127.0.0.1",
        "SEALSTREAM_REGISTRY_PORT": str(port),
    }
    if stack.local is not None:  # the same users as the stack's own registry
        env["SEALSTREAM_REGISTRY_USERS_FILE"] = str(stack.local.settings.registry_users_file)
    proc = subprocess.Popen(
        [sys.executable, "-m", "schemas.registry"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/subjects", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"second registry exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("second registry did not start")


@pytest.fixture
def second_registry(stack: Any, tmp_path: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (tmp_path / "registry2.log").open("wb") as log:
        proc = _start_registry(stack, port, log)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def _eventually(fn: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except (SchemaRegistryError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_two_instances_agree(stack: Any, second_registry: str, subject: str) -> None:
    with (
        SchemaRegistryClient(stack.registry_config()) as a,
        SchemaRegistryClient({**stack.registry_config(), "url": second_registry}) as b,
    ):
        _check_agreement(a, b, subject)


def _check_agreement(a: SchemaRegistryClient, b: SchemaRegistryClient, subject: str) -> None:
    id_a = a.register_schema(subject, V1)
    # B learns it from the log and gives the same answers.
    assert _eventually(lambda: b.lookup_schema(subject, V1)).schema_id == id_a
    assert b.register_schema(subject, V1) == id_a
    # Registering different schemas through both at once still yields one consistent history.
    a.set_compatibility(subject, "NONE")
    schemas = [record("Order", {"name": f"f{i}", "type": "int"}) for i in range(6)]
    for i, schema in enumerate(schemas):
        (a if i % 2 else b).register_schema(subject, schema)

    def same_view() -> list[tuple[int, int]]:
        va = [(v, a.get_version(subject, v).schema_id) for v in a.get_versions(subject)]
        vb = [(v, b.get_version(subject, v).schema_id) for v in b.get_versions(subject)]
        assert va == vb
        return va

    view = _eventually(same_view)
    assert len(view) == 7 and len({sid for _, sid in view}) == 7


def test_state_survives_registry_and_broker_restart(stack: Any, subject: str) -> None:
    if stack.local is None:
        pytest.skip("an external stack (KAFKA_BOOTSTRAP set) cannot be restarted by the tests")
    with SchemaRegistryClient(stack.registry_config()) as client:
        first = client.register_schema(subject, V1)
        second = client.register_schema(subject, V2)
        client.set_compatibility(subject, "FULL")

    stack.local.restart_registry()
    with SchemaRegistryClient(stack.registry_config()) as fresh:  # no client-side cache
        assert fresh.get_versions(subject) == [1, 2]
        assert fresh.get_compatibility(subject) == "FULL"

    stack.local.restart_broker()
    stack.local.restart_registry()
    with SchemaRegistryClient(stack.registry_config()) as fresh:
        _check_restarted(fresh, subject, first, second)


def _check_restarted(fresh: SchemaRegistryClient, subject: str, first: int, second: int) -> None:
    assert fresh.lookup_schema(subject, V2).schema_id == second
    assert json.loads(fresh.get_schema(first).schema_str) == json.loads(V1.schema_str)
    # Ids stay stable and new ones keep counting up after the restarts.
    third = fresh.register_schema(
        subject,
        record(
            "Order",
            {"name": "id", "type": "string"},
            {"name": "note", "type": ["null", "string"], "default": None},
            {"name": "qty", "type": "int", "default": 1},
        ),
    )
    assert third > second > first
