"""Cold-store lifecycle: how long files are kept per tenant and event type.

Rules live in ``config/retention.yaml`` (first matching rule wins, ``*`` matches anything)::

    default_days: 2555
    rules:
      - {tenant: "*", event_type: page_view, days: 400}

A file expires when its event day (the ``date=`` in its path) is more than ``days`` days before
today (UTC); the data file and its manifest are deleted together, manifest last, so an
interrupted run leaves no data file without its manifest. S3 lifecycle rules cannot express
per-tenant/per-type retention over this layout without one rule per prefix, hence a command.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from sinks.objects.files import FILE_SUFFIX, MANIFEST_SUFFIX, parse_path
from sinks.objects.store import ObjectStore


class Rule(BaseModel):
    tenant: str = "*"
    event_type: str = "*"
    days: int = Field(ge=1)


class RetentionRules(BaseModel):
    default_days: int = Field(default=2555, ge=1)
    rules: list[Rule] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RetentionRules:
        if not path.exists():
            return cls()
        return cls.model_validate(yaml.safe_load(path.read_text()) or {})

    def days_for(self, tenant: str, event_type: str) -> int:
        for rule in self.rules:
            if rule.tenant in ("*", tenant) and rule.event_type in ("*", event_type):
                return rule.days
        return self.default_days


@dataclass
class RetentionReport:
    removed: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    kept_files: int = 0
    deleted: bool = False

    def rows(self) -> list[tuple[Any, ...]]:
        return [
            (t, e, v["days"], v["files"], v["records"], v["bytes"])
            for (t, e), v in sorted(self.removed.items())
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "kept_files": self.kept_files,
            "removed": [
                dict(
                    zip(
                        ("tenant", "event_type", "days", "files", "records", "bytes"),
                        r,
                        strict=True,
                    )
                )
                for r in self.rows()
            ],
        }


def apply_retention(
    store: ObjectStore,
    prefix: str,
    rules: RetentionRules,
    *,
    delete: bool,
    today: dt.date | None = None,
) -> RetentionReport:
    today = today or dt.datetime.now(dt.UTC).date()
    report = RetentionReport(deleted=delete)
    for info in store.listing(prefix.strip("/") or None):
        if not info.path.endswith(FILE_SUFFIX):
            continue
        fields = parse_path(info.path)
        if fields is None:
            continue
        days = rules.days_for(fields["tenant"], fields["event_type"])
        day = dt.date.fromisoformat(fields["date"])
        if (today - day).days <= days:
            report.kept_files += 1
            continue
        manifest_path = info.path + MANIFEST_SUFFIX
        try:
            records = int(json.loads(store.get(manifest_path))["records"])
        except (FileNotFoundError, ValueError, KeyError):
            records = 0
        entry = report.removed.setdefault(
            (fields["tenant"], fields["event_type"]),
            {"days": days, "files": 0, "records": 0, "bytes": 0},
        )
        entry["files"] += 1
        entry["records"] += records
        entry["bytes"] += info.size
        if delete:
            store.delete([info.path])
            with contextlib.suppress(FileNotFoundError):
                store.delete([manifest_path])
    return report
