"""schemathesis against the gateway's own OpenAPI document: no input makes it answer 5xx.

Runs the schemathesis CLI (its pytest plugin does not work with pytest 9 yet) against the real
gateway on the real stack, with a valid token, so generated requests get past authentication
into validation, authorization and Kafka.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def test_no_server_errors(gateway: Any) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is a dev dependency (pip install -e '.[dev]')"
    token = gateway.token(scopes=["events:write", "receipts:read"])
    result = subprocess.run(
        [
            cli,
            "run",
            f"{gateway.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "30",
            "--seed",
            "20261122",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert "passed" in summary and "failed" not in summary.split("Test cases:")[-1], summary
