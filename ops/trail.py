"""``sealstream audit EVENT_ID``: everything known about one event (sinks/trail.py), read from
ClickHouse itself when this process may open it, else through the ClickHouse sink's
``/v1/audit`` endpoint (its audit index, or ClickHouse with ``from_store``)."""

from __future__ import annotations

from typing import Any

from ops import actions
from ops.errors import Forbidden, NotFound, Unavailable
from ops.feedback import SILENT, Feedback
from ops.settings import Settings

ENDPOINT_WAIT_S = 60  # for a sink its supervisor is restarting


def _from_endpoint(
    base_url: str, event_id: str, token: str | None, from_store: bool
) -> dict[str, Any] | None:
    from sinks.clickhouse.access import HotUnavailable, endpoint_call, local_token

    url = f"{base_url}/v1/audit/{event_id}"
    if from_store:
        url += "?source=store"
    bearer = token or local_token("*", "auditor")
    try:
        response = endpoint_call(
            "GET", url, bearer, wait_s=ENDPOINT_WAIT_S, timeout_s=ENDPOINT_WAIT_S
        )
    except HotUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    if response.status_code not in (200, 404):
        kind = Forbidden if response.status_code in (401, 403) else Unavailable
        raise kind(f"{response.status_code}: {response.text}")
    return dict(response.json()) if response.status_code == 200 else None


def lookup(
    settings: Settings,
    event_id: str,
    token: str | None = None,
    from_store: bool = False,
    feedback: Feedback = SILENT,
) -> dict[str, Any]:
    """The event's audit trail: receipt, authorization decision, processing, where it is
    stored hot and cold, dead-letter history and replays. ``token``: an auditor JWT for the
    endpoint (default: one minted from the local keyring)."""
    from sealstream.keys import load_hmac_keyring
    from sinks.clickhouse.access import direct_reader, open_hot
    from sinks.objects.store import ObjectStore
    from sinks.trail import StoreSource, audit_trail

    clickhouse, objects = settings.clickhouse, settings.objects
    access = open_hot(clickhouse)
    if access.client is not None:
        # the sink is not running: ClickHouse itself (its index may be behind a backfill)
        read = direct_reader(access.client, clickhouse.database)
        trail = audit_trail(
            StoreSource(read),
            event_id,
            load_hmac_keyring(settings.keys),
            ObjectStore(objects),
            objects.prefix,
        )
        ok = trail is not None
        actions.record(settings, "audit_lookup", {"event_id": event_id}, ok, feedback=feedback)
    else:
        trail = _from_endpoint(str(access.base_url), event_id, token, from_store)
    if trail is None:
        raise NotFound(f"no stored event {event_id!r}")
    return trail
