"""Registry semantics without Kafka: the service over a log kept in a Python list.

The log list stands in for the ``_schemas`` partition, so replaying it into a fresh
``RegistryState`` is exactly what a restarted or second registry instance does.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from starlette.testclient import TestClient

from schemas.registry.app import build_app
from schemas.registry.compat import Level, check, parse_schema
from schemas.registry.errors import (
    IncompatibleSchema,
    InvalidCompatibilityLevel,
    InvalidSchema,
    SchemaNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    VersionNotFound,
)
from schemas.registry.service import Registry
from schemas.registry.state import RegistryState, VersionEntry, schema_key, schema_value


class ListStore:
    """An append-only log in memory, applied synchronously like the Kafka store does."""

    def __init__(self, state: RegistryState, log: list[tuple[bytes, bytes | None]]) -> None:
        self.state = state
        self.log = log
        self.lock = threading.RLock()
        for key, value in log:
            state.apply(key, value)

    def write(self, key: bytes, value: bytes | None) -> bool:
        self.log.append((key, value))
        with self.lock:
            return self.state.apply(key, value)


def record(name: str, *fields: dict[str, Any]) -> str:
    return json.dumps({"type": "record", "name": name, "fields": list(fields)})


V1 = record("User", {"name": "id", "type": "long"})
V2_OPTIONAL = record(
    "User",
    {"name": "id", "type": "long"},
    {"name": "email", "type": ["null", "string"], "default": None},
)
V2_REQUIRED = record("User", {"name": "id", "type": "long"}, {"name": "email", "type": "string"})
V2_TYPE_CHANGE = record("User", {"name": "id", "type": "string"})


@pytest.fixture
def log() -> list[tuple[bytes, bytes | None]]:
    return []


@pytest.fixture
def registry(log: list[tuple[bytes, bytes | None]]) -> Registry:
    state = RegistryState()
    return Registry(state, ListStore(state, log))


def replay(log: list[tuple[bytes, bytes | None]]) -> Registry:
    state = RegistryState()
    return Registry(state, ListStore(state, list(log)))


def test_same_schema_twice_gets_same_id_and_version(registry: Registry) -> None:
    first = registry.register("s", {"schema": V1})
    # Different whitespace and key order: same canonical form, same schema.
    again = registry.register("s", {"schema": json.dumps(json.loads(V1), indent=2)})
    assert first == again == {"id": 1, "version": 1, "subject": "s"}
    assert registry.versions("s") == [1]


def test_ids_are_global_across_subjects(registry: Registry) -> None:
    a = registry.register("a", {"schema": V1})
    b = registry.register("b", {"schema": V1})
    c = registry.register("b", {"schema": V2_OPTIONAL})
    assert a["id"] == b["id"] == 1
    assert c["id"] == 2
    assert registry.subjects_for_id(1) == ["a", "b"]


def test_defaults_and_custom_attributes_are_part_of_identity(registry: Registry) -> None:
    with_pii = record("User", {"name": "id", "type": "long", "pii": True})
    registry.register("s", {"schema": V1})
    assert registry.register("s", {"schema": with_pii})["id"] == 2


@pytest.mark.parametrize(
    ("level", "new", "ok"),
    [
        (Level.BACKWARD, V2_OPTIONAL, True),
        (Level.BACKWARD, V2_REQUIRED, False),  # new reader has no default for email
        (Level.FORWARD, V2_REQUIRED, True),  # old reader ignores the new field
        (Level.FORWARD, V2_TYPE_CHANGE, False),
        (Level.FULL, V2_OPTIONAL, True),
        (Level.FULL, V2_REQUIRED, False),
        (Level.NONE, V2_TYPE_CHANGE, True),
    ],
)
def test_compatibility_matrix(level: Level, new: str, ok: bool) -> None:
    problems = check(level, parse_schema(new), [parse_schema(V1)])
    assert (problems == []) is ok, problems


def test_transitive_levels_check_every_version() -> None:
    v1 = parse_schema(record("R", {"name": "a", "type": "int"}))
    # v2 drops field a: fine for BACKWARD against v1 (reader ignores it).
    v2 = parse_schema(record("R", {"name": "b", "type": "int", "default": 0}))
    # v3 needs a again without default: reads v2 data? No (v2 lacks a). Reads v1? Yes.
    v3 = parse_schema(record("R", {"name": "a", "type": "int"}))
    assert check(Level.BACKWARD, v3, [v2, v1]) == []  # vs latest (v1 here) only
    assert check(Level.BACKWARD_TRANSITIVE, v3, [v2, v1]) != []
    # Forward: v2 gave a a default, v4 drops a. v2 readers cope with v4 data, v1 readers not.
    f1 = parse_schema(record("R", {"name": "a", "type": "int"}))
    f2 = parse_schema(record("R", {"name": "a", "type": "int", "default": 0}))
    f4 = parse_schema(record("R", {"name": "c", "type": "int"}))
    assert check(Level.FORWARD, f4, [f1, f2]) == []
    assert check(Level.FORWARD_TRANSITIVE, f4, [f1, f2]) != []
    assert check(Level.FULL_TRANSITIVE, v1, [v1]) == []


def test_incompatible_registration_raises_409_and_writes_nothing(
    registry: Registry, log: list[tuple[bytes, bytes | None]]
) -> None:
    registry.register("s", {"schema": V1})
    before = len(log)
    with pytest.raises(IncompatibleSchema) as info:
        registry.register("s", {"schema": V2_REQUIRED})
    assert info.value.error_code == 409
    assert "email" in info.value.message
    assert len(log) == before


def test_subject_level_config_overrides_global(registry: Registry) -> None:
    registry.register("s", {"schema": V1})
    registry.set_config("s", {"compatibility": "NONE"})
    assert registry.register("s", {"schema": V2_TYPE_CHANGE})["version"] == 2
    assert registry.get_config(None) is Level.BACKWARD
    assert registry.delete_config("s") is Level.NONE
    with pytest.raises(InvalidCompatibilityLevel):
        registry.set_config(None, {"compatibility": "SIDEWAYS"})


@pytest.mark.parametrize(
    "body",
    [
        {"schema": "{not json"},
        {"schema": json.dumps({"type": "record", "name": "X"})},
        {"schema": json.dumps({"type": "nonsense"})},
        {"schema": ""},
        {},
        {"schema": V1, "schemaType": "PROTOBUF"},
        {"schema": "{}", "schemaType": "JSON"},
    ],
)
def test_invalid_schemas_are_42201_and_change_nothing(
    registry: Registry, log: list[tuple[bytes, bytes | None]], body: dict[str, Any]
) -> None:
    with pytest.raises(InvalidSchema) as info:
        registry.register("s", body)
    assert info.value.error_code == 42201
    assert log == []


def test_lookup_and_not_found_codes(registry: Registry) -> None:
    registry.register("s", {"schema": V1})
    assert registry.lookup("s", {"schema": V1})["version"] == 1
    with pytest.raises(SchemaNotFound):
        registry.lookup("s", {"schema": V2_OPTIONAL})
    with pytest.raises(SubjectNotFound):
        registry.lookup("missing", {"schema": V1})
    with pytest.raises(VersionNotFound):
        registry.get_version("s", 9)


def test_soft_then_permanent_delete_keeps_ids_stable(
    registry: Registry, log: list[tuple[bytes, bytes | None]]
) -> None:
    registry.register("s", {"schema": V1})
    registry.register("s", {"schema": V2_OPTIONAL})
    with pytest.raises(SubjectNotSoftDeleted):
        registry.delete_subject("s", permanent=True)
    assert registry.delete_subject("s") == [1, 2]
    assert registry.subjects() == []
    assert registry.subjects(include_deleted=True) == ["s"]
    assert registry.delete_subject("s", permanent=True) == [1, 2]
    with pytest.raises(SchemaNotFound):
        registry.schema_by_id(2)
    # A new schema never reuses an id, even after a replay from the log.
    replayed = replay(log)
    third = record("User", {"name": "id", "type": "long"}, {"name": "n", "type": "int"})
    assert replayed.register("s", {"schema": third})["id"] == 3
    # The old schema registered again comes back with its old id.
    assert replayed.register("other", {"schema": V2_OPTIONAL})["id"] == 2


def test_replay_of_the_log_gives_the_same_answers(
    registry: Registry, log: list[tuple[bytes, bytes | None]]
) -> None:
    registry.register("a", {"schema": V1})
    registry.register("a", {"schema": V2_OPTIONAL})
    registry.set_config("a", {"compatibility": "FULL"})
    registry.delete_version("a", 1)
    replayed = replay(log)
    for reg in (registry, replayed):
        assert reg.versions("a") == [2]
        assert reg.versions("a", include_deleted=True) == [1, 2]
        assert reg.get_config("a") is Level.FULL
        assert reg.schema_by_id(1) == parse_schema(V1).text


def test_concurrent_writers_first_in_log_wins() -> None:
    """Two instances both think version 1 and id 1 are free; the log decides."""
    state = RegistryState()
    a = parse_schema(V1)
    b = parse_schema(record("Other", {"name": "x", "type": "int"}))
    entry_a = VersionEntry("s", 1, 1, a.fingerprint)
    entry_b = VersionEntry("s", 1, 1, b.fingerprint)
    assert state.apply(schema_key("s", 1, a.fingerprint), schema_value(entry_a, a.text))
    assert not state.apply(schema_key("s", 1, b.fingerprint), schema_value(entry_b, b.text))
    # Same id claimed for a different schema under another subject is rejected too.
    entry_c = VersionEntry("t", 1, 1, b.fingerprint)
    assert not state.apply(schema_key("t", 1, b.fingerprint), schema_value(entry_c, b.text))
    assert state.schema_text(1) == a.text


def test_losing_writer_retries_with_fresh_state(
    registry: Registry, log: list[tuple[bytes, bytes | None]]
) -> None:
    other = parse_schema(record("Other", {"name": "x", "type": "int"}))
    original_write = registry.store.write
    raced = False

    def racing_write(key: bytes, value: bytes | None) -> bool:
        nonlocal raced
        if not raced:  # another instance's record lands first, taking version 1 and id 1
            raced = True
            entry = VersionEntry("s", 1, 1, other.fingerprint)
            original_write(schema_key("s", 1, other.fingerprint), schema_value(entry, other.text))
        return original_write(key, value)

    registry.store.write = racing_write  # type: ignore[method-assign]
    registry.set_config("s", {"compatibility": "NONE"})
    result = registry.register("s", {"schema": V1})
    assert result == {"id": 2, "version": 2, "subject": "s"}
    assert registry.versions("s") == [1, 2]


def test_http_layer_speaks_confluent_error_shape(registry: Registry) -> None:
    client = TestClient(build_app(registry))
    ok = client.post("/subjects/s/versions", json={"schema": V1})
    assert ok.status_code == 200 and ok.json()["id"] == 1
    assert ok.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
    cases = [
        (client.get("/subjects/nope/versions"), 404, 40401),
        (client.get("/subjects/s/versions/5"), 404, 40402),
        (client.get("/schemas/ids/77"), 404, 40403),
        (client.post("/subjects/s/versions", json={"schema": V2_REQUIRED}), 409, 409),
        (client.post("/subjects/s/versions", json={"schema": "{"}), 422, 42201),
        (client.get("/subjects/s/versions/zero"), 422, 42202),
        (client.put("/config", json={"compatibility": "MAYBE"}), 422, 42203),
        (client.get("/config/s"), 404, 40408),
        (client.get("/no/such/route"), 404, 404),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error_code"] == code and body["message"]
    raw = client.post("/subjects/s/versions", content=b"not json")
    assert raw.status_code == 400 and raw.json()["error_code"] == 400
    assert client.get("/subjects/s/versions/latest/schema").json() == json.loads(V1)
    compat = client.post(
        "/compatibility/subjects/s/versions/latest?verbose=true", json={"schema": V2_REQUIRED}
    ).json()
    assert compat["is_compatible"] is False and compat["messages"]
