"""One way to reach ClickHouse: clickhouse-connect, embedded (chDB) or a server over HTTP.

The embedded engine belongs to one process at a time (chDB opens a data directory for one
process); in the local stack that process is the ClickHouse sink, which serves read-only
queries to everyone else (sinks/clickhouse/endpoint.py).
"""

from __future__ import annotations

from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from sealstream.settings import ClickHouseSettings


class EngineBusy(RuntimeError):
    """The embedded engine's directory is open in another process (the ClickHouse sink)."""


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
