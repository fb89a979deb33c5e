"""``sealstream replay cold``: rebuild ClickHouse from the object store (sinks/backfill.py
verifies each file and record and skips rows already present), then record the run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ops import actions
from ops.errors import Unavailable
from ops.feedback import SILENT, Feedback
from ops.settings import Settings
from ops.verify import event_selection

if TYPE_CHECKING:
    from sinks.backfill import BackfillReport


def _invalidate_trail_index(settings: Settings) -> None:
    """ClickHouse changed behind the sink: its audit index rebuilds on start."""
    index_path = settings.clickhouse.audit_index_path
    if index_path is not None and index_path.exists():
        from sinks.clickhouse.trail_index import TrailIndex

        index = TrailIndex(index_path)
        index.invalidate()
        index.close()


def replay_cold(
    settings: Settings,
    since: str | None = None,
    until: str | None = None,
    tenant: str | None = None,
    event_type: str | None = None,
    feedback: Feedback = SILENT,
) -> BackfillReport:
    """Insert what the selected cold files hold and ClickHouse lacks. Needs write access to
    ClickHouse: a server, or the embedded engine with the ClickHouse sink stopped."""
    from sealstream.keys import load_hmac_keyring
    from sinks.backfill import backfill
    from sinks.clickhouse.access import open_hot
    from sinks.clickhouse.client import EngineBusy
    from sinks.clickhouse.migrations import migrate
    from sinks.objects.store import ObjectStore

    selection = event_selection(since, until, tenant, event_type)
    clickhouse = settings.clickhouse
    try:
        client = open_hot(clickhouse, write=True).client
    except EngineBusy as exc:
        raise Unavailable(str(exc)) from exc
    assert client is not None
    migrate(client, clickhouse)
    objects = settings.objects
    with feedback.bars() as bars:
        advance = bars.task("cold files")
        report = backfill(
            client,
            clickhouse.database,
            ObjectStore(objects),
            objects.prefix,
            selection,
            load_hmac_keyring(settings.keys),
            lambda _: advance(1),
        )
    if report.inserted:
        _invalidate_trail_index(settings)
    result = report.as_dict()
    actions.record(
        settings,
        "replay_cold",
        {k: v for k, v in result.items() if k != "reconciliation"}
        | {"since": since, "until": until, "tenant": tenant, "event_type": event_type},
        report.ok,
        feedback=feedback,
    )
    return report
