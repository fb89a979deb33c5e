"""One way to reach ClickHouse: clickhouse-connect, embedded (chDB) or a server over HTTP.

The embedded engine belongs to one process at a time (chDB opens a data directory for one
process); in the local stack that process is the ClickHouse sink, which serves read-only
queries to everyone else (sinks/clickhouse/endpoint.py).
"""

from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path
from typing import IO, Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from sealstream.settings import ClickHouseSettings

log = logging.getLogger("sealstream.clickhouse")


class EngineBusy(RuntimeError):
    """The embedded engine's directory is open in another process (the ClickHouse sink)."""


def engine_dir(settings: ClickHouseSettings) -> Path:
    """The embedded engine's data directory (from ``url`` when it names one)."""
    return Path(settings.dsn.removeprefix("chdb://"))


def reservation_path(settings: ClickHouseSettings) -> Path:
    directory = engine_dir(settings)
    return directory.with_name(f"{directory.name}.owner.lock")


def reserve(settings: ClickHouseSettings, *, exclusive: bool) -> IO[bytes] | None:
    """Claim the embedded engine's directory for this process's lifetime (the lock goes with
    the returned file; keep it open).

    chDB lets one process open a directory, and a tool that opens it while the ClickHouse
    sink restarts takes it from the sink. So the sink and the ``up`` supervisor hold a shared
    claim as long as they run, and a tool that wants the engine itself asks for an exclusive
    claim without waiting: refused (None) means a sink or ``up`` is live, so it goes through
    the sink's endpoint instead. The sink waits for a tool's exclusive claim to end.
    """
    path = reservation_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("ab")
    if exclusive:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle
    waited = time.monotonic()
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() - waited > 10:
                log.warning("waiting for a tool to release the embedded engine %s", path)
                waited = time.monotonic()
            time.sleep(0.2)


def connect(settings: ClickHouseSettings, database: str | None = None) -> Client:
    """A client for ``settings``; the database is created by the migrations, not here."""
    if settings.embedded:
        settings.embedded_dir.mkdir(parents=True, exist_ok=True)
        try:
            return clickhouse_connect.get_client(dsn=settings.dsn, database=database)
        except clickhouse_connect.driver.exceptions.ProgrammingError as exc:
            if "Unable to open the chdb engine" in str(exc):
                raise EngineBusy(
                    f"the embedded ClickHouse at {settings.embedded_dir} is open in another "
                    "process (normally `sealstream sink clickhouse`); query it through that "
                    "process (`sealstream query`) or stop it first"
                ) from exc
            raise
    kwargs: dict[str, Any] = {
        "dsn": settings.url,
        "username": settings.user,
        "verify": settings.verify_tls,
        "database": database or "default",
    }
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    if settings.ca_cert is not None:
        kwargs["ca_cert"] = str(settings.ca_cert)
    return clickhouse_connect.get_client(**kwargs)
