"""``sealstream receipts verify``: what a publisher runs on the receipts it kept, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ops.cli import app
from producers.receipts import ReceiptIssuer
from sealstream.keys import load_hmac_keyring, load_receipt_signer
from sealstream.settings import KeySettings


@pytest.fixture
def issuer(tmp_path: Path) -> ReceiptIssuer:
    settings = KeySettings(dir=tmp_path / "keys")
    return ReceiptIssuer(load_receipt_signer(settings), load_hmac_keyring(settings))


def leaf(n: int) -> dict[str, Any]:
    return {
        "event_id": f"e-{n}",
        "tenant": "acme",
        "event_type": "login",
        "payload_sha256": "00" * 32,
        "received_at": "2026-12-01T10:00:00.000Z",
        "topic": "events.raw",
        "partition": n % 3,
        "offset": n,
    }


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["receipts", "verify", *args])


def said(result: Result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def keys(issuer: ReceiptIssuer, tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [issuer.signer.jwk()]}))
    return path


def test_a_gateway_response_and_old_receipts_verify(
    issuer: ReceiptIssuer, keys: Path, tmp_path: Path
) -> None:
    response = {
        "accepted": [
            {"index": i, "receipt": r}
            for i, r in enumerate(issuer.issue_tree([leaf(i) for i in range(5)], "t"))
        ]
    }
    lines = tmp_path / "kept.jsonl"
    lines.write_text(json.dumps(response) + "\n" + json.dumps(issuer.issue_v1(**leaf(9))) + "\n")
    result = run(str(lines), "--keys", str(keys), "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["valid"] == 6
    assert [r["format"] for r in body["receipts"]] == [2, 2, 2, 2, 2, 1]


def test_one_changed_receipt_fails_the_run_and_is_named(
    issuer: ReceiptIssuer, keys: Path, tmp_path: Path
) -> None:
    receipts = issuer.issue_tree([leaf(i) for i in range(3)], "t")
    receipts[1]["offset"] = 99
    path = tmp_path / "kept.json"
    path.write_text(json.dumps(receipts))
    result = run(str(path), "--keys", str(keys))
    assert result.exit_code == 1
    assert "INVALID e-1" in said(result) and "2 of 3 receipts valid" in said(result)


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json at all", "not JSON"), ("[]", "no receipts"), ('{"x": 1}', "expected a receipt")],
)
def test_unusable_input_is_a_usage_error(
    keys: Path, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "kept.json"
    path.write_text(content)
    result = run(str(path), "--keys", str(keys))
    assert result.exit_code == 2 and message in said(result)


def test_keys_are_required_and_must_be_a_key_set(tmp_path: Path, issuer: ReceiptIssuer) -> None:
    path = tmp_path / "kept.json"
    path.write_text(json.dumps(issuer.issue_tree([leaf(1)], "t")[0]))
    assert "give the gateway's public keys" in said(run(str(path)))
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    result = run(str(path), "--keys", str(bad))
    assert result.exit_code == 2 and "JWKS" in said(result)
