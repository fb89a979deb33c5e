"""Tools never open the embedded engine while a ClickHouse sink or ``sealstream up`` claims it
(sinks/clickhouse/client.py: ``reserve``): reads go through the sink's endpoint, writes are
refused with what to do, and the claim ends with the process that held it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.access import open_hot
from sinks.clickhouse.client import EngineBusy, reservation_path, reserve

HOLDER = """
import sys
from sealstream.settings import ClickHouseSettings
from sinks.clickhouse.client import reserve
claim = reserve(ClickHouseSettings(embedded_dir=sys.argv[1]), exclusive=False)
print("claimed", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_a_live_claim_sends_reads_to_the_endpoint_and_refuses_writes(tmp_path: Path) -> None:
    settings = ClickHouseSettings(embedded_dir=tmp_path / "clickhouse", query_port=18999)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(settings.embedded_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        access = open_hot(settings)
        assert access.client is None  # the engine itself was not opened
        assert access.base_url == "http://127.0.0.1:18999"
        with pytest.raises(EngineBusy, match="stop it first"):
            open_hot(settings, write=True)
        assert reserve(settings, exclusive=True) is None
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    claim = reserve(settings, exclusive=True)  # the claim died with its process
    assert claim is not None
    assert reservation_path(settings) == tmp_path / "clickhouse.owner.lock"
    claim.close()


def test_a_claim_follows_the_directory_a_chdb_url_names(tmp_path: Path) -> None:
    settings = ClickHouseSettings(url=f"chdb://{tmp_path}/hot")
    assert reservation_path(settings) == tmp_path / "hot.owner.lock"
