"""Registry authentication: a change needs a user with the write role; without credentials
it is 401 with ``WWW-Authenticate`` and changes nothing; reads stay open unless configured."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from schemas.registry.app import build_app
from schemas.registry.auth import (
    READ,
    WRITE,
    BasicAuth,
    UsersFileError,
    ensure_operator,
    hashed,
    is_mutation,
    load_users,
)
from schemas.registry.service import Registry
from schemas.registry.state import RegistryState
from sealstream.keys import InsecureKeyFile, write_private
from tests.unit.test_registry_service import V1, V2_OPTIONAL, ListStore

CT = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.json"
    users = {"admin": hashed("admin", "s3cret-admin", [WRITE]), "app": hashed("app", "pw", [READ])}
    write_private(path, json.dumps({"users": users}).encode())
    return path


def _client(users_file: Path, reads_need_auth: bool = False) -> tuple[TestClient, list]:
    log: list = []
    state = RegistryState()
    registry = Registry(state, ListStore(state, log))  # type: ignore[arg-type]
    app = BasicAuth(build_app(registry), load_users(users_file), reads_need_auth)
    return TestClient(app), log


@pytest.mark.parametrize(
    "method, path, changes",
    [
        ("POST", "/subjects/s-value/versions", True),
        ("POST", "/subjects/s-value/versions/", True),
        ("DELETE", "/subjects/s-value", True),
        ("DELETE", "/subjects/s-value/versions/1", True),
        ("PUT", "/config", True),
        ("PUT", "/config/s-value", True),
        ("DELETE", "/config/s-value", True),
        ("PUT", "/mode", True),
        ("POST", "/subjects/s-value/versions/1", True),  # no such route: still guarded
        ("PATCH", "/subjects/s-value", True),
        ("POST", "/mode", True),
        ("POST", "/subjects/s-value/versions/1/schema", True),
        ("POST", "/subjects/s-value", False),  # a lookup
        ("POST", "/compatibility/subjects/s-value/versions/latest", False),  # a check
        ("POST", "/compatibility/subjects/s-value/versions", False),
        ("HEAD", "/subjects", False),
        ("GET", "/subjects", False),
        ("GET", "/schemas/ids/1", False),
    ],
)
def test_which_requests_change_the_registry(method: str, path: str, changes: bool) -> None:
    assert is_mutation(method, path) is changes


def test_a_change_without_credentials_is_401_and_writes_nothing(users_file: Path) -> None:
    client, log = _client(users_file)
    body = json.dumps({"schema": V1})
    for auth in (None, ("admin", "wrong"), ("nobody", "s3cret-admin")):
        answer = client.post("/subjects/s-value/versions", content=body, headers=CT, auth=auth)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error_code"] == 40101
        assert answer.headers["www-authenticate"].startswith("Basic realm=")
    for bad in ("Basic !!!", "Basic " + "YWRtaW4=", "Bearer x", "basic"):
        answer = client.put(
            "/config", json={"compatibility": "NONE"}, headers={"Authorization": bad}
        )
        assert answer.status_code == 401
    assert log == []
    assert client.get("/config").json()["compatibilityLevel"] == "BACKWARD"  # reads are open


def test_a_reader_may_read_and_look_up_but_not_change(users_file: Path) -> None:
    client, log = _client(users_file)
    assert client.post(
        "/subjects/s-value/versions", content=json.dumps({"schema": V1}), headers=CT,
        auth=("admin", "s3cret-admin"),
    ).status_code == 200  # fmt: skip
    written = len(log)
    refused = client.delete("/subjects/s-value", auth=("app", "pw"))
    assert refused.status_code == 403 and refused.json()["error_code"] == 40301
    assert len(log) == written
    found = client.post("/subjects/s-value", content=json.dumps({"schema": V1}), headers=CT)
    assert found.status_code == 200 and found.json()["version"] == 1
    check = client.post(
        "/compatibility/subjects/s-value/versions/latest",
        content=json.dumps({"schema": V2_OPTIONAL}), headers=CT,
    )  # fmt: skip
    assert check.json() == {"is_compatible": True}


def test_reads_need_credentials_when_configured_and_health_never_does(users_file: Path) -> None:
    client, _ = _client(users_file, reads_need_auth=True)
    assert client.get("/subjects").status_code == 401
    assert client.get("/subjects", auth=("app", "pw")).json() == []
    assert client.get("/health").status_code == 200


def test_the_operator_credential_is_made_once_owner_only_and_is_not_in_the_users_file(
    tmp_path: Path,
) -> None:
    users, secret = (
        tmp_path / "k" / "registry-users.json",
        tmp_path / "k" / "registry-operator.secret",
    )
    assert ensure_operator(users, secret) is True
    assert ensure_operator(users, secret) is False
    for path in (users, secret):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    name, _, password = secret.read_text().partition(":")
    assert name == "operator" and len(password) >= 40
    assert password not in users.read_text()
    assert load_users(users)["operator"].check(password)
    assert not load_users(users)["operator"].check(password + "x")


def test_a_users_file_others_may_read_or_malformed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"users": {"a": hashed("a", "p", [WRITE])}}))
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        load_users(path)
    path.chmod(0o600)
    path.write_text('{"users": {"a": {"roles": []}}}')
    with pytest.raises(UsersFileError, match="users file"):
        load_users(path)
    with pytest.raises(UsersFileError, match="unknown roles"):
        hashed("a", "p", ["admin"])
