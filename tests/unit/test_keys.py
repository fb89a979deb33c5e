"""Signing keys: generation on first use, permissions, rotation, verification across key ids."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sealstream.keys import (
    HmacKeyring,
    KeyError_,
    load_hmac_keyring,
    load_receipt_signer,
    save_hmac_keyring,
    verify_ed25519,
)
from sealstream.settings import KeySettings


def test_keys_are_generated_once_with_owner_only_permissions(tmp_path: Path) -> None:
    settings = KeySettings(dir=tmp_path / "keys")
    first = load_hmac_keyring(settings)
    again = load_hmac_keyring(settings)
    assert first == again
    mode = stat.S_IMODE((tmp_path / "keys" / "hmac.json").stat().st_mode)
    assert mode == 0o600
    assert "base64" not in repr(first) and str(first.keys[first.active]) not in repr(first)


def test_missing_keys_are_an_error_when_generation_is_off(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="missing"):
        load_receipt_signer(KeySettings(dir=tmp_path, generate=False))


def test_rotation_keeps_old_signatures_verifiable(tmp_path: Path) -> None:
    settings = KeySettings(dir=tmp_path)
    old = load_hmac_keyring(settings)
    old_kid, old_mac = old.sign(b"event")
    save_hmac_keyring(settings, old.rotated("hmac-2"))
    new = load_hmac_keyring(settings)
    assert new.active == "hmac-2"
    assert new.verify(old_kid, b"event", old_mac) is True
    assert new.verify(old_kid, b"evenT", old_mac) is False
    assert new.verify("hmac-unknown", b"event", old_mac) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"active": "a", "keys": {"a": "short"}}',
        '{"active": "b", "keys": {"a": "' + "x" * 40 + '"}}',
        "not json",
    ],
)
def test_bad_keyrings(text: str) -> None:
    with pytest.raises(KeyError_):
        HmacKeyring.from_json(text)


def test_receipt_signatures_verify_with_the_public_jwk(tmp_path: Path) -> None:
    signer = load_receipt_signer(KeySettings(dir=tmp_path))
    jwk = signer.jwk()
    assert jwk["kid"] == signer.kid and "d" not in jwk
    sig = signer.sign(b"receipt")
    assert verify_ed25519(jwk, b"receipt", sig)
    assert not verify_ed25519(jwk, b"receipT", sig)
    assert load_receipt_signer(KeySettings(dir=tmp_path)).kid == signer.kid


def test_a_keyring_file_reader_follows_a_rotation(tmp_path: Path) -> None:
    from sealstream.keys import KeyringFile, load_hmac_keyring, save_hmac_keyring
    from sealstream.settings import KeySettings

    settings = KeySettings(dir=tmp_path)
    watched = KeyringFile(settings)
    first = watched.current().active
    assert watched.current() is watched.current()  # unchanged file: not re-read
    rotated = load_hmac_keyring(settings).rotated("k-new")
    save_hmac_keyring(settings, rotated)
    assert watched.current().active == "k-new" and first in watched.current().keys
