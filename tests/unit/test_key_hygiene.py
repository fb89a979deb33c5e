"""Key hygiene: every secret file Sealstream reads is refused when others may read it, with the
command that fixes it in the message, and every one it writes is owner-only from its first byte.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops.cli import app
from sealstream.auth import Keyring
from sealstream.keys import (
    InsecureKeyFile,
    load_hmac_keyring,
    load_receipt_signer,
    read_private,
    write_private,
)
from sealstream.settings import AuthSettings, KeySettings

SECRET = "k" * 40


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o666])
def test_a_secret_file_others_may_read_is_refused_with_the_fix_in_the_message(
    tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    path.chmod(mode)
    with pytest.raises(InsecureKeyFile) as info:
        read_private(path)
    assert f"chmod 600 {path}" in str(info.value) and f"{mode:04o}" in str(info.value)
    path.chmod(0o600)
    assert read_private(path) == b"x"
    path.chmod(0o400)
    assert read_private(path) == b"x"


@pytest.mark.parametrize("name", ["hmac.json", "jwt-hs256.json", "receipt-ed25519.pem"])
def test_each_generated_key_is_refused_once_it_is_made_readable_by_others(
    tmp_path: Path, name: str
) -> None:
    keys = KeySettings(dir=tmp_path)
    load = load_receipt_signer if name.endswith(".pem") else load_hmac_keyring
    load(keys) if name.endswith(".pem") else load(keys, name)  # type: ignore[call-arg]
    path = tmp_path / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        load(keys) if name.endswith(".pem") else load(keys, name)  # type: ignore[call-arg]


def test_a_configured_jwt_keyring_file_is_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "jwt.json"
    path.write_text(json.dumps({"active": "k1", "keys": {"k1": SECRET}}))
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFile):
        Keyring.from_settings(AuthSettings(hs256_keys_file=path))
    path.chmod(0o600)
    assert Keyring.from_settings(AuthSettings(hs256_keys_file=path)).active_hs256 == "k1"


def test_written_secrets_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "new" / "secret", b"s")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_a_command_started_on_an_unsafe_key_file_exits_2_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_hmac_keyring(KeySettings(dir=tmp_path), "jwt-hs256.json")
    (tmp_path / "jwt-hs256.json").chmod(0o644)
    for name in list(os.environ):
        if name.startswith("SEALSTREAM_AUTH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SEALSTREAM_KEYS_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["tokens", "issue"])
    assert result.exit_code == 2, result.output
    assert "chmod 600" in result.output and "Traceback" not in result.output
