"""Authorization: a versioned YAML policy of roles (RBAC) and attribute rules (ABAC).

Every decision, allow or deny, names the policy version and a reason code, so an auditor can
replay it later against the same policy. Decisions are cached with the policy version in the
key, and the file is re-read when it changes (no restart); a broken new file is refused and
the previous policy stays in force (fail closed on the old, known-good rules).

Evaluation order for ``decide(principal, action, event_type, event_tenant)``:

1. the action needs its scope in the token (``publish`` needs ``events:write``, ...);
2. the token's roles (claim ``roles``; the policy's ``default_roles`` when absent) must include
   one that grants the action;
3. tenant isolation: the event's tenant must equal the token's, unless that role has
   ``cross_tenant: true``;
4. the event's tenant must be known and allow the event type;
5. the role must allow the event type and its data classification.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sealstream.auth import Principal


class Classification(IntEnum):
    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    RESTRICTED = 3


ClassificationName = Literal["public", "internal", "confidential", "restricted"]


class RolePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actions: list[str]
    event_types: list[str] = Field(default_factory=lambda: ["*"])
    max_classification: ClassificationName = "restricted"
    cross_tenant: bool = False


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_types: list[str] = Field(default_factory=lambda: ["*"])
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, gt=0)


class PolicyDocument(BaseModel):
    """The YAML file's shape; unknown keys are errors so typos cannot loosen a rule."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1)
    action_scopes: dict[str, str] = Field(
        default_factory=lambda: {
            "publish": "events:write",
            "read_receipt": "receipts:read",
            "read_audit": "audit:read",
            "query": "analytics:read",
            "dlq:replay": "dlq:replay",
        }
    )
    default_roles: list[str] = Field(default_factory=lambda: ["publisher"])
    roles: dict[str, RolePolicy]
    tenants: dict[str, TenantPolicy]
    classification: dict[str, ClassificationName] = Field(default_factory=dict)
    default_classification: ClassificationName = "internal"


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str
    policy_version: str
    role: str | None = None


class PolicyError(ValueError):
    """The policy file cannot be used."""


def _matches(patterns: list[str], value: str) -> bool:
    return "*" in patterns or value in patterns


class Policy:
    """One loaded, immutable policy version."""

    def __init__(self, doc: PolicyDocument, digest: str = "") -> None:
        self.doc = doc
        # The declared version plus the content hash: an edit that forgets to bump the version
        # still gets a new version string, so cached decisions and audit records stay truthful.
        self.version = f"{doc.version}#{digest[:12]}" if digest else doc.version
        unknown = [r for r in doc.default_roles if r not in doc.roles]
        if unknown:
            raise PolicyError(f"default_roles names undefined roles: {unknown}")

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            data = path.read_bytes()
            raw = yaml.safe_load(data)
            return cls(PolicyDocument.model_validate(raw), hashlib.sha256(data).hexdigest())
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"cannot read policy {path}: {exc}") from exc
        except ValidationError as exc:
            raise PolicyError(f"invalid policy {path}: {exc}") from exc

    def classification_of(self, event_type: str) -> Classification:
        name = self.doc.classification.get(event_type, self.doc.default_classification)
        return Classification[name.upper()]

    def decide(
        self, principal: Principal, action: str, event_type: str | None, event_tenant: str
    ) -> Decision:
        def deny(reason: str, role: str | None = None) -> Decision:
            return Decision(False, reason, self.version, role)

        scope = self.doc.action_scopes.get(action)
        if scope is None:
            return deny("DENY_ACTION_UNKNOWN")
        if scope not in principal.scopes:
            return deny("DENY_SCOPE_MISSING")
        names = sorted(principal.roles) or self.doc.default_roles
        roles = [(n, self.doc.roles[n]) for n in names if n in self.doc.roles]
        roles = [(n, r) for n, r in roles if action in r.actions]
        if not roles:
            return deny("DENY_ROLE_MISSING")
        if event_tenant != principal.tenant:
            roles = [(n, r) for n, r in roles if r.cross_tenant]
            if not roles:
                return deny("DENY_TENANT_MISMATCH")
        tenant = self.doc.tenants.get(event_tenant)
        if tenant is None:
            return deny("DENY_TENANT_UNKNOWN")
        if event_type is None:
            return Decision(True, "ALLOW", self.version, roles[0][0])
        if not _matches(tenant.event_types, event_type):
            return deny("DENY_EVENT_TYPE_NOT_ALLOWED_FOR_TENANT")
        by_type = [(n, r) for n, r in roles if _matches(r.event_types, event_type)]
        if not by_type:
            return deny("DENY_EVENT_TYPE_NOT_IN_ROLE", roles[0][0])
        level = self.classification_of(event_type)
        for name, role in by_type:
            if Classification[role.max_classification.upper()] >= level:
                return Decision(True, "ALLOW", self.version, name)
        return deny("DENY_CLASSIFICATION", by_type[0][0])


class PolicyStore:
    """The policy in force: reloaded when the file changes, decisions cached per version."""

    def __init__(self, path: Path, check_every_s: float = 1.0, cache_size: int = 50_000) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self.cache_size = cache_size
        self._policy = Policy.load(path)
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self._cache: OrderedDict[tuple[Any, ...], Decision] = OrderedDict()
        self._lock = threading.Lock()
        self.reload_errors = 0

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    @property
    def policy(self) -> Policy:
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self.reload_if_changed()
        return self._policy

    def reload_if_changed(self) -> bool:
        """Load the file again if it changed; keep the old policy if the new one is broken."""
        try:
            mtime = self._stat()
        except OSError:
            self.reload_errors += 1
            return False
        if mtime == self._mtime:
            return False
        try:
            policy = Policy.load(self.path)
        except PolicyError:
            self.reload_errors += 1
            self._mtime = mtime  # do not re-parse the same broken file every second
            return False
        with self._lock:
            self._policy, self._mtime = policy, mtime
        return True

    def decide(
        self, principal: Principal, action: str, event_type: str | None, event_tenant: str
    ) -> Decision:
        policy = self.policy
        key = (
            policy.version,
            principal.tenant,
            principal.roles,
            principal.scopes,
            action,
            event_type,
            event_tenant,
        )
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        decision = policy.decide(principal, action, event_type, event_tenant)
        with self._lock:
            self._cache[key] = decision
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return decision
