"""``sealstream schemas register|check`` against the in-process fake registry client: statuses,
idempotence and exit codes (the real registry is exercised in the integration tests)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ops.cli import app
from ops.cli import schemas as cli
from schemas.catalog import default_catalog
from tests.unit.test_schemas_serde import FakeRegistry

PAGE_VIEW = "events.raw-io.sealstream.events.PageViewEvent"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    fake = FakeRegistry()
    monkeypatch.setattr(cli, "_client", lambda settings: fake)
    monkeypatch.setattr(cli, "_reasons", lambda settings, subject, schema: "READER_FIELD_MISSING")
    return fake


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["schemas", *args, "--json"])


def rows(result: Result) -> dict[str, dict[str, Any]]:
    return {row["subject"]: row for row in json.loads(result.output)}


def test_register_is_idempotent(registry: FakeRegistry) -> None:
    first = run("register")
    assert first.exit_code == 0, first.output
    assert set(rows(first)) == set(default_catalog().subjects())
    assert {r["status"] for r in rows(first).values()} == {"registered"}

    registry.calls.clear()
    second = run("register")
    assert second.exit_code == 0
    assert {r["status"] for r in rows(second).values()} == {"unchanged"}
    assert not [c for c in registry.calls if c.startswith("register")]
    assert rows(second)[PAGE_VIEW]["id"] == rows(first)[PAGE_VIEW]["id"]


def test_check_new_then_compatible_then_incompatible(registry: FakeRegistry) -> None:
    fresh = run("check")
    assert fresh.exit_code == 0
    assert {r["status"] for r in rows(fresh).values()} == {"new"}

    assert run("register").exit_code == 0
    same = run("check")
    assert same.exit_code == 0
    assert {r["status"] for r in rows(same).values()} == {"compatible"}

    registry.incompatible.add(PAGE_VIEW)
    registry.versions[PAGE_VIEW].append("{}")  # files now differ from the latest version
    broken = run("check")
    assert broken.exit_code == 1
    verdict = rows(broken)[PAGE_VIEW]
    assert (verdict["status"], verdict["detail"]) == ("incompatible", "READER_FIELD_MISSING")
    assert {r["status"] for s, r in rows(broken).items() if s != PAGE_VIEW} == {"compatible"}


def test_register_reports_a_refused_schema_and_exits_1(registry: FakeRegistry) -> None:
    assert run("register").exit_code == 0
    registry.incompatible.add(PAGE_VIEW)
    registry.versions[PAGE_VIEW] = ["{}"]  # the registered schema is not the file's any more
    result = run("register")
    assert result.exit_code == 1
    assert rows(result)[PAGE_VIEW]["status"] == "incompatible"


@pytest.mark.parametrize("command", ["register", "check"])
def test_unreachable_registry_exits_2(monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """The real client against a port that refuses: whatever network error it raises (httpx or
    httpx2, depending on what is installed) becomes exit code 2."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        monkeypatch.setattr(
            cli, "_client", lambda settings: SchemaRegistryClient({"url": url, "max.retries": 0})
        )
        result = CliRunner().invoke(app, ["schemas", command, "--registry-url", url])
    assert result.exit_code == 2, result.output
    assert "unreachable" in result.output and url in result.output


def test_a_url_the_client_rejects_exits_2() -> None:
    result = CliRunner().invoke(app, ["schemas", "check", "--registry-url", "not a url"])
    assert result.exit_code == 2
    assert "bad schema registry settings" in result.output


def test_the_stacks_operator_credential_goes_to_the_stacks_registry_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from sealstream.keys import write_private
    from sealstream.settings import StackSettings

    stack = StackSettings(dir=tmp_path, registry_port=28555)
    write_private(stack.registry_operator_file, b"operator:pw")
    for name in ("SEALSTREAM_REGISTRY_BASIC_AUTH_FILE", "SEALSTREAM_REGISTRY_BASIC_AUTH_USER_INFO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEALSTREAM_STACK_DIR", str(tmp_path))
    monkeypatch.setenv("SEALSTREAM_STACK_REGISTRY_PORT", "28555")
    seen: list[dict[str, Any]] = []

    def client(settings: Any) -> FakeRegistry:
        seen.append(settings.client_config())
        return FakeRegistry()

    monkeypatch.setattr(cli, "_client", client)
    from ops.stack.process import ManagedProcess

    monkeypatch.setattr(ManagedProcess, "pid", lambda self: 4242)  # the stack's registry runs
    for url in (stack.registry_url, "http://other.example:8081"):
        CliRunner().invoke(app, ["schemas", "register", "--registry-url", url, "--json"])
    monkeypatch.setattr(ManagedProcess, "pid", lambda self: None)  # it does not: someone else's
    CliRunner().invoke(app, ["schemas", "register", "--registry-url", stack.registry_url])
    assert seen[0]["basic.auth.user.info"] == "operator:pw"
    assert "basic.auth.user.info" not in seen[1]  # never sent to a registry that is not the stack's
    assert "basic.auth.user.info" not in seen[2]  # nor to whatever listens on its port meanwhile
