"""``sealstream demo`` / ``sealstream up --demo``: publish a realistic mix through the gateway,
wait until it lands, and reconcile.

The mix: three tenants, three event types, each tenant publishing what its policy allows; a
few events that are invalid (missing field, wrong type, unknown event type) and a few that are
unauthorized (an event type the tenant may not publish, another tenant's events). Tokens are
minted with the local HS256 keyring, as ``sealstream tokens issue`` does.

The summary counts: accepted (202 + receipt) / rejected by reason code / dead-lettered /
accepted events found in ClickHouse (through the sink's query endpoint) / in cold storage (read
back from the files) / files written / the ``verify`` result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sealstream.settings import AuthSettings

if TYPE_CHECKING:
    from ops.mainjob import GatewayAccess

# what each demo tenant publishes (all allowed by config/policy.yaml)
TENANTS = {
    "acme": ("payment", "page_view", "login"),
    "globex": ("page_view", "login"),
    "initech": ("payment", "login"),
}


def payload(event_type: str, i: int, rng: random.Random) -> dict[str, Any]:
    if event_type == "payment":
        return {
            "payment_id": f"pay-{uuid.uuid4().hex[:12]}",
            "account_id": f"acc-{rng.randrange(50)}",
            "amount_minor": rng.randrange(100, 500_000),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "status": rng.choice(["CAPTURED", "AUTHORIZED", "REFUNDED"]),
            "method": rng.choice(["CARD", "SEPA", "WALLET"]),
            "merchant_id": f"m-{rng.randrange(10)}",
            "payer_email": f"customer{i}@example.test",
        }
    if event_type == "login":
        ok = rng.random() > 0.1
        return {
            "user_id": f"u-{rng.randrange(200)}",
            "username": f"user{rng.randrange(200)}",
            "success": ok,
            "method": rng.choice(["PASSWORD", "SSO", "PASSKEY", "OTP"]),
            "mfa": rng.random() > 0.3,
            "client_ip": f"203.0.113.{rng.randrange(1, 255)}",
            "failure_reason": None if ok else "bad_password",
        }
    return {
        "session_id": f"s-{uuid.uuid4().hex[:10]}",
        "user_id": f"u-{rng.randrange(200)}",
        "url": f"https://shop.example.test/p/{rng.randrange(1000)}",
        "referrer": None,
        "user_agent": "Mozilla/5.0 (demo)",
        "client_ip": None,
        "duration_ms": rng.randrange(100, 60_000),
    }


def event(tenant: str, event_type: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "tenant": tenant,
        "event_type": event_type,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "payload": body,
    }


@dataclass
class DemoSummary:
    published: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dead_lettered: int | None = 0
    stored_hot: int = 0
    stored_cold: int = 0
    cold_files: int = 0
    landed_s: float | None = None
    verify_ok: bool | None = None
    verify_checked: dict[str, int] = field(default_factory=dict)
    verify_findings: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.accepted > 0
            and self.stored_hot == self.accepted
            and self.stored_cold == self.accepted
            and self.verify_ok is True
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def publish_mix(
    gateway: GatewayAccess,
    auth: AuthSettings,
    per_tenant: int,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], Counter[str], int]:
    """Publish the mix; (accepted event ids, rejections by reason code, events sent)."""
    from producers.client import SealstreamClient
    from sealstream.auth import Keyring, issue_token

    rng = random.Random(seed)
    keyring = Keyring.from_settings(auth)

    def token(tenant: str) -> str:
        return issue_token(
            keyring, auth, f"demo-{tenant}", tenant, ["events:write", "receipts:read"], None, 900
        )

    accepted: list[str] = []
    rejected: Counter[str] = Counter()
    sent = 0
    for tenant, types in TENANTS.items():
        batch = [
            event(tenant, types[i % len(types)], payload(types[i % len(types)], i, rng))
            for i in range(per_tenant)
        ]
        # invalid: a required field missing, a wrong type, an unknown event type
        broken = event(tenant, types[0], payload(types[0], 0, rng))
        broken["payload"].pop(next(iter(broken["payload"])))
        wrong = event(tenant, "page_view", payload("page_view", 0, rng))
        wrong["payload"]["duration_ms"] = "long"
        unknown = event(tenant, "checkout", {"cart": 1})
        batch += [broken, wrong, unknown]
        rng.shuffle(batch)
        with SealstreamClient(
            gateway.url, token(tenant), batch_size=50, ca_file=gateway.ca_file,
            client_cert=gateway.client_cert,
        ) as client:  # fmt: skip
            result = client.publish(batch, correlation_id=f"demo-{tenant}")
        sent += len(batch)
        accepted += [r["event_id"] for r in result.receipts]
        rejected.update(_code(r) for r in result.rejected)
        if progress:
            progress(len(batch))
    # unauthorized: globex may not publish payments; acme may not publish globex's events
    forbidden = [
        ("globex", event("globex", "payment", payload("payment", 0, rng))),
        ("acme", event("globex", "login", payload("login", 0, rng))),
    ]
    for as_tenant, item in forbidden:
        with SealstreamClient(
            gateway.url, token(as_tenant), ca_file=gateway.ca_file,
            client_cert=gateway.client_cert,
        ) as client:  # fmt: skip
            result = client.publish([item])
        sent += 1
        accepted += [r["event_id"] for r in result.receipts]
        rejected.update(_code(r) for r in result.rejected)
        if progress:
            progress(1)
    return accepted, rejected, sent


def _code(rejection: dict[str, Any]) -> str:
    error = rejection.get("error")
    if isinstance(error, dict) and error.get("code"):
        return str(error["code"])
    return str(rejection.get("code") or rejection.get("status") or "unknown")


def _in_list(ids: list[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)  # uuids minted here: no quoting needed


def count_hot(query: Callable[[str], list[list[Any]]], ids: list[str]) -> tuple[int, int]:
    """(accepted events in ClickHouse, dead letters of them)."""
    if not ids:
        return 0, 0
    hot = query(f"SELECT uniqExact(event_id) FROM events WHERE event_id IN ({_in_list(ids)})")
    dead = query(f"SELECT count() FROM dead_letters WHERE event_id IN ({_in_list(ids)})")
    return int(hot[0][0]), int(dead[0][0])


def count_cold(store: Any, prefix: str, ids: set[str], since: dt.date) -> tuple[int, int]:
    """(accepted events found in cold files, files holding them)."""
    from sinks.objects.reader import Selection, iter_cold

    found: set[str] = set()
    files = 0
    for content in iter_cold(store, prefix, Selection(since=since)):
        mine = {str(r["event_id"]) for r in content.records} & ids
        if mine:
            files += 1
            found |= mine
    return len(found), files


def run_verify() -> tuple[bool, dict[str, Any]]:
    """The full ``verify all``: a filtered one checks no chain for gaps (sinks/verify.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "verify", "all", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, {"error": (done.stderr or done.stdout)[-2000:]}
    return done.returncode == 0, report


def wait_landed(
    check: Callable[[], tuple[int, int]],
    expected: int,
    timeout_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int, bool]:
    """Poll ``check`` -> (hot, cold) until both reach ``expected`` or the timeout."""
    import httpx

    deadline = time.monotonic() + timeout_s
    hot = cold = 0
    while True:
        with contextlib.suppress(httpx.TransportError):  # the ClickHouse sink restarts: wait
            hot, cold = check()
        if progress:
            progress(hot, cold)
        if hot >= expected and cold >= expected:
            return hot, cold, True
        if time.monotonic() > deadline:
            return hot, cold, False
        time.sleep(1.0)
