"""The registry's state, rebuilt by replaying the compacted ``_schemas`` topic.

The topic is the source of truth and this module is a pure function of it: every instance
that reads the same log reaches the same state, so two registries agree without a leader.

Records (keys and values are JSON):

- ``{"keytype": "SCHEMA", "subject", "version", "fingerprint"}`` -> ``{"subject", "version",
  "id", "fingerprint", "schema", "deleted"}``; a permanent delete rewrites the same key with
  ``"hard_deleted": true`` and no schema text, so ids and version numbers are never reused.
- ``{"keytype": "CONFIG", "subject": s | null}`` -> ``{"compatibilityLevel": L}``; a tombstone
  removes the setting.

Two instances may race to write the same version number or schema id. The fingerprint in the
key keeps both records apart under compaction, and the first one in log order wins: a record
that conflicts with one already applied is rejected here, the same way on every instance, and
its writer retries with fresh state. Because SCHEMA keys are never deleted, a rejected record
can never become accepted later.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas.registry.compat import Level


@dataclass
class VersionEntry:
    subject: str
    version: int
    id: int
    fingerprint: str
    deleted: bool = False
    hard_deleted: bool = False

    @property
    def live(self) -> bool:
        return not (self.deleted or self.hard_deleted)


def schema_key(subject: str, version: int, fingerprint: str) -> bytes:
    return _dump(
        {"keytype": "SCHEMA", "subject": subject, "version": version, "fingerprint": fingerprint}
    )


def config_key(subject: str | None) -> bytes:
    return _dump({"keytype": "CONFIG", "subject": subject})


def schema_value(entry: VersionEntry, text: str | None) -> bytes:
    value: dict[str, Any] = {
        "subject": entry.subject,
        "version": entry.version,
        "id": entry.id,
        "fingerprint": entry.fingerprint,
        "deleted": entry.deleted,
    }
    if entry.hard_deleted:
        value["hard_deleted"] = True
    else:
        value["schema"] = text
    return _dump(value)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class RegistryState:
    """Everything the registry knows, as applied from the log."""

    default_level: Level = Level.BACKWARD
    subjects: dict[str, dict[int, VersionEntry]] = field(default_factory=dict)
    max_version: dict[str, int] = field(default_factory=dict)
    id_by_fingerprint: dict[str, int] = field(default_factory=dict)
    fingerprint_by_id: dict[int, str] = field(default_factory=dict)
    text_by_id: dict[int, str] = field(default_factory=dict)
    max_id: int = 0
    configs: dict[str | None, Level] = field(default_factory=dict)

    # -- applying the log -------------------------------------------------------------

    def apply(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply one record; return whether it was accepted. Unknown records are ignored."""
        if key is None:
            return False
        try:
            k = json.loads(key)
            v = json.loads(value) if value is not None else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(k, dict):
            return False
        if k.get("keytype") == "CONFIG":
            return self._apply_config(k.get("subject"), v)
        if k.get("keytype") == "SCHEMA" and isinstance(v, dict):
            return self._apply_schema(v)
        return False

    def _apply_config(self, subject: object, value: object) -> bool:
        if subject is not None and not isinstance(subject, str):
            return False
        if value is None:
            self.configs.pop(subject, None)
            return True
        if not isinstance(value, dict):
            return False
        try:
            self.configs[subject] = Level.parse(value.get("compatibilityLevel"))
        except ValueError:
            return False
        return True

    def _apply_schema(self, v: dict[str, Any]) -> bool:
        try:
            subject, fp = v["subject"], v["fingerprint"]
            version, sid = int(v["version"]), int(v["id"])
        except (KeyError, TypeError, ValueError):
            return False
        hard = bool(v.get("hard_deleted", False))
        text = v.get("schema")
        if not hard and not isinstance(text, str):
            return False
        existing = self.subjects.get(subject, {}).get(version)
        if existing is not None and existing.fingerprint != fp:
            return False  # the version slot belongs to another schema
        if self.id_by_fingerprint.get(fp, sid) != sid:
            return False  # this schema already has another id
        if self.fingerprint_by_id.get(sid, fp) != fp:
            return False  # this id already belongs to another schema
        self.id_by_fingerprint[fp] = sid
        self.fingerprint_by_id[sid] = fp
        if isinstance(text, str):
            self.text_by_id.setdefault(sid, text)
        self.max_id = max(self.max_id, sid)
        self.max_version[subject] = max(self.max_version.get(subject, 0), version)
        self.subjects.setdefault(subject, {})[version] = VersionEntry(
            subject, version, sid, fp, deleted=bool(v.get("deleted", False)), hard_deleted=hard
        )
        return True

    # -- queries -------------------------------------------------------------------------

    def versions(self, subject: str, include_deleted: bool = False) -> list[VersionEntry]:
        """Versions of ``subject`` oldest first; hard-deleted ones are never listed."""
        entries = self.subjects.get(subject, {})
        return [
            e
            for _, e in sorted(entries.items())
            if not e.hard_deleted and (include_deleted or not e.deleted)
        ]

    def subject_names(self, include_deleted: bool = False) -> list[str]:
        return sorted(s for s in self.subjects if self.versions(s, include_deleted))

    def entries_for_id(self, sid: int, include_deleted: bool = False) -> Iterator[VersionEntry]:
        for subject in sorted(self.subjects):
            for entry in self.versions(subject, include_deleted):
                if entry.id == sid:
                    yield entry

    def schema_text(self, sid: int) -> str | None:
        """Schema text for an id that some subject version (soft-deleted or not) still uses."""
        if next(self.entries_for_id(sid, include_deleted=True), None) is None:
            return None
        return self.text_by_id.get(sid)

    def level(self, subject: str | None) -> Level:
        if subject is not None and subject in self.configs:
            return self.configs[subject]
        return self.configs.get(None, self.default_level)

    def next_version(self, subject: str) -> int:
        return self.max_version.get(subject, 0) + 1

    def id_for(self, fingerprint: str) -> int:
        """The id this schema has, or the next free one: ids are never reused."""
        return self.id_by_fingerprint.get(fingerprint, self.max_id + 1)
