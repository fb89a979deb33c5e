"""Reading the cold store back: select files by path fields, check each against its manifest."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sealstream.integrity import Problem
from sinks.objects.files import FILE_SUFFIX, MANIFEST_SUFFIX, parse_path, read_file
from sinks.objects.store import ObjectStore


@dataclass(frozen=True)
class Selection:
    """Which cold files: event days (inclusive), tenant, event type; None = any."""

    since: dt.date | None = None
    until: dt.date | None = None
    tenant: str | None = None
    event_type: str | None = None

    def matches(self, fields: dict[str, str]) -> bool:
        day = dt.date.fromisoformat(fields["date"])
        return (
            (self.since is None or day >= self.since)
            and (self.until is None or day <= self.until)
            and (self.tenant is None or fields["tenant"] == self.tenant)
            and (self.event_type is None or fields["event_type"] == self.event_type)
        )


@dataclass
class ColdFileContent:
    path: str
    manifest: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    size: int = 0
    schema: Any = None  # the file's writer schema
    problems: list[tuple[Problem, str]] = field(default_factory=list)


def select_files(store: ObjectStore, prefix: str, selection: Selection) -> list[str]:
    """Data files under ``prefix`` matching ``selection``, in name order."""
    narrowed = prefix.strip("/")
    if selection.tenant is not None:
        narrowed += f"/tenant={selection.tenant}"
        if selection.event_type is not None:
            narrowed += f"/event_type={selection.event_type}"
    paths = []
    for info in store.listing(narrowed.strip("/") or None):
        if not info.path.endswith(FILE_SUFFIX):
            continue
        fields = parse_path(info.path)
        if fields is not None and selection.matches(fields):
            paths.append(info.path)
    return sorted(paths)


def load_file(store: ObjectStore, path: str) -> ColdFileContent:
    """A cold file's records, with what is wrong with the file as a whole."""
    data = store.get(path)
    content = ColdFileContent(path, None, size=len(data))
    try:
        manifest = json.loads(store.get(path + MANIFEST_SUFFIX))
    except FileNotFoundError:
        content.problems.append((Problem.MISSING, "the file's manifest is missing"))
    except ValueError:
        content.problems.append((Problem.MODIFIED, "the manifest is not valid JSON"))
    else:
        if isinstance(manifest, dict):
            content.manifest = manifest
        else:
            content.problems.append((Problem.MODIFIED, "the manifest is not a JSON object"))
    manifest = content.manifest or {}
    if manifest and hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        content.problems.append(
            (Problem.MODIFIED, "file bytes do not match the sha256 in its manifest")
        )
    try:
        content.records, content.offsets, content.schema = read_file(data)
    except Exception as exc:  # fastavro raises many kinds on corrupt files
        content.problems.append((Problem.MODIFIED, f"the file does not decode: {exc}"))
        return content
    if len(content.offsets) != len(content.records):
        content.problems.append(
            (Problem.MODIFIED, "record offsets in the file header do not match its records")
        )
        content.offsets = list(range(len(content.records)))
    expected = manifest.get("records")
    if expected is not None and expected != len(content.records):
        kind = Problem.MISSING if len(content.records) < expected else Problem.INSERTED
        content.problems.append(
            (kind, f"the manifest lists {expected} records, the file holds {len(content.records)}")
        )
    return content


def iter_cold(store: ObjectStore, prefix: str, selection: Selection) -> Iterator[ColdFileContent]:
    for path in select_files(store, prefix, selection):
        yield load_file(store, path)
