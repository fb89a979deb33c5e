"""Authorization policy: RBAC + ABAC decisions, reason codes, caching by version, reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from producers.policy import Policy, PolicyError, PolicyStore
from sealstream.auth import Principal

REPO_POLICY = Path(__file__).resolve().parents[2] / "config" / "policy.yaml"


def principal(
    tenant: str = "acme", roles: tuple[str, ...] = (), scopes: tuple[str, ...] = ("events:write",)
) -> Principal:
    return Principal(
        subject="svc",
        tenant=tenant,
        scopes=frozenset(scopes),
        roles=frozenset(roles),
        issuer="i",
        token_id="j",
        issued_at=0,
        expires_at=2**40,
        key_id="k",
    )


@pytest.fixture
def policy() -> Policy:
    return Policy.load(REPO_POLICY)


@pytest.mark.parametrize(
    ("who", "action", "event_type", "tenant", "allow", "reason"),
    [
        (principal(), "publish", "payment", "acme", True, "ALLOW"),
        (principal(), "publish", "payment", "globex", False, "DENY_TENANT_MISMATCH"),
        (
            principal("globex"),
            "publish",
            "payment",
            "globex",
            False,
            "DENY_EVENT_TYPE_NOT_ALLOWED_FOR_TENANT",
        ),
        (principal(scopes=()), "publish", "page_view", "acme", False, "DENY_SCOPE_MISSING"),
        (
            principal(roles=("web-publisher",)),
            "publish",
            "login",
            "acme",
            False,
            "DENY_EVENT_TYPE_NOT_IN_ROLE",
        ),
        (principal(roles=("analyst",)), "publish", "page_view", "acme", False, "DENY_ROLE_MISSING"),
        (principal("nobody"), "publish", "page_view", "nobody", False, "DENY_TENANT_UNKNOWN"),
        (principal(), "launch", "page_view", "acme", False, "DENY_ACTION_UNKNOWN"),
        (
            principal(roles=("auditor",), scopes=("audit:read",)),
            "read_audit",
            None,
            "globex",
            True,
            "ALLOW",
        ),
        (
            principal(roles=("publisher",), scopes=("audit:read",)),
            "read_audit",
            None,
            "acme",
            False,
            "DENY_ROLE_MISSING",
        ),
    ],
)
def test_decisions(
    policy: Policy,
    who: Principal,
    action: str,
    event_type: str | None,
    tenant: str,
    allow: bool,
    reason: str,
) -> None:
    decision = policy.decide(who, action, event_type, tenant)
    assert (decision.allow, decision.reason) == (allow, reason)
    assert decision.policy_version.startswith("2026-11-22.1#")


def test_classification_ceiling(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: v1\n"
        "roles: {low: {actions: [publish], max_classification: internal}}\n"
        "default_roles: [low]\n"
        "tenants: {acme: {}}\n"
        "classification: {payment: restricted}\n"
    )
    decision = Policy.load(path).decide(principal(), "publish", "payment", "acme")
    assert decision.reason == "DENY_CLASSIFICATION"


@pytest.mark.parametrize(
    "text",
    [
        "version: v1\nroles: {}\ntenants: {}\nrolez: {}\n",  # typo'd key is an error
        "version: v1\nroles: {r: {actions: [publish], cross_tenant: maybe}}\ntenants: {}\n",
        "version: v1\nroles: {}\ntenants: {}\ndefault_roles: [ghost]\n",
        "roles: {}\ntenants: {}\n",
        "{{{ not yaml",
    ],
)
def test_bad_policies_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError):
        Policy.load(path)


def test_reload_without_restart_and_cache_keyed_by_version(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    shutil.copy(REPO_POLICY, path)
    store = PolicyStore(path, check_every_s=0)
    before = store.decide(principal("globex"), "publish", "payment", "globex")
    assert not before.allow
    text = path.read_text().replace(
        "  globex:\n    event_types: [page_view, login]",
        "  globex:\n    event_types: [page_view, login, payment]",
    )
    path.write_text(text)  # same declared version: the content hash still changes it
    os.utime(path, ns=(1, 10**18))
    after = store.decide(principal("globex"), "publish", "payment", "globex")
    assert after.allow and after.policy_version != before.policy_version
    # A broken edit keeps the last good policy in force.
    path.write_text("version: [")
    os.utime(path, ns=(1, 2 * 10**18))
    kept = store.decide(principal("globex"), "publish", "payment", "globex")
    assert kept.allow and kept.policy_version == after.policy_version
    assert store.reload_errors == 1
