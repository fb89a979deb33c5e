"""Registry operations with Confluent Schema Registry semantics, on top of the log-backed state.

Reads are answered from memory. Writes compute their record from the current state, append it
through :class:`KafkaStore` and retry if another instance's record won the same slot first.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any, Protocol

from schemas.registry.compat import Level, ParsedSchema, check, parse_schema
from schemas.registry.errors import (
    IncompatibleSchema,
    InvalidSchema,
    InvalidVersion,
    RegistryError,
    SchemaNotFound,
    SubjectConfigNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from schemas.registry.state import (
    RegistryState,
    VersionEntry,
    config_key,
    schema_key,
    schema_value,
)

_MAX_RACE_RETRIES = 8
_MAX_VERSION = 2**31 - 1


class Store(Protocol):
    lock: threading.RLock

    def write(self, key: bytes, value: bytes | None) -> bool: ...


def parse_version(raw: str) -> int | str:
    """``latest`` (or -1) or a positive version number; anything else is 42202."""
    if raw in ("latest", "-1"):
        return "latest"
    try:
        version = int(raw)
    except ValueError:
        raise InvalidVersion(raw) from None
    if not 1 <= version <= _MAX_VERSION:
        raise InvalidVersion(raw)
    return version


def _schema_type(body: dict[str, Any]) -> None:
    schema_type = body.get("schemaType", "AVRO") or "AVRO"
    if str(schema_type).upper() != "AVRO":
        raise InvalidSchema(
            f"Invalid schema: schemaType {schema_type!r} is not supported by this registry; "
            "it stores AVRO schemas only"
        )
    if body.get("references"):
        raise InvalidSchema("Invalid schema: schema references are not supported; inline the types")


class Registry:
    """The operations behind the REST API."""

    def __init__(self, state: RegistryState, store: Store) -> None:
        self.state = state
        self.store = store
        self._write_lock = threading.Lock()  # one writer per instance; races across instances
        # are settled by the log (see state.py)

    # -- helpers ------------------------------------------------------------------------

    def _entry(
        self, subject: str, version: int | str, include_deleted: bool = False
    ) -> VersionEntry:
        entries = self.state.versions(subject, include_deleted=True)
        if not entries:
            raise SubjectNotFound(subject)
        visible = entries if include_deleted else [e for e in entries if e.live]
        if version == "latest":
            if not visible:
                raise SubjectNotFound(subject)
            return visible[-1]
        for entry in visible:
            if entry.version == version:
                return entry
        raise VersionNotFound(subject, version)

    def _describe(self, entry: VersionEntry) -> dict[str, Any]:
        return {
            "subject": entry.subject,
            "version": entry.version,
            "id": entry.id,
            "schema": self.state.text_by_id.get(entry.id, ""),
        }

    def _parsed_versions(self, subject: str) -> list[ParsedSchema]:
        return [parse_schema(self.state.text_by_id[e.id]) for e in self.state.versions(subject)]

    def _write_entry(self, entry: VersionEntry, text: str | None) -> bool:
        return self.store.write(
            schema_key(entry.subject, entry.version, entry.fingerprint), schema_value(entry, text)
        )

    # -- subjects and versions -------------------------------------------------------------

    def subjects(self, include_deleted: bool = False) -> list[str]:
        with self.store.lock:
            return self.state.subject_names(include_deleted)

    def versions(self, subject: str, include_deleted: bool = False) -> list[int]:
        with self.store.lock:
            entries = self.state.versions(subject, include_deleted)
            if not entries:
                raise SubjectNotFound(subject)
            return [e.version for e in entries]

    def get_version(
        self, subject: str, version: int | str, include_deleted: bool = False
    ) -> dict[str, Any]:
        with self.store.lock:
            return self._describe(self._entry(subject, version, include_deleted))

    def register(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        """Register a schema under ``subject``; the same schema again returns the same id."""
        _schema_type(body)
        parsed = parse_schema(body.get("schema"))
        with self._write_lock:
            for _ in range(_MAX_RACE_RETRIES):
                with self.store.lock:
                    for entry in self.state.versions(subject):
                        if entry.fingerprint == parsed.fingerprint:
                            return {"id": entry.id, "version": entry.version, "subject": subject}
                    level = self.state.level(subject)
                    problems = check(level, parsed, self._parsed_versions(subject))
                    if problems:
                        raise IncompatibleSchema(subject, problems)
                    entry = VersionEntry(
                        subject,
                        self.state.next_version(subject),
                        self.state.id_for(parsed.fingerprint),
                        parsed.fingerprint,
                    )
                if self._write_entry(entry, parsed.text):
                    return {"id": entry.id, "version": entry.version, "subject": subject}
                # Another instance took this version or id first: tidy up our record (its key
                # is unique to it) and try again with the state that now includes theirs.
                self.store.write(schema_key(subject, entry.version, entry.fingerprint), None)
        raise RegistryError("Could not register the schema: too many concurrent writers")

    def lookup(
        self, subject: str, body: dict[str, Any], include_deleted: bool = False
    ) -> dict[str, Any]:
        """Which version of ``subject`` holds this schema (``POST /subjects/{s}``)."""
        _schema_type(body)
        parsed = parse_schema(body.get("schema"))
        with self.store.lock:
            entries = self.state.versions(subject, include_deleted)
            if not entries:
                raise SubjectNotFound(subject)
            for entry in reversed(entries):
                if entry.fingerprint == parsed.fingerprint:
                    return self._describe(entry)
        raise SchemaNotFound()

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        with self._write_lock:
            with self.store.lock:
                entries = self.state.versions(subject, include_deleted=True)
                if not entries:
                    raise SubjectNotFound(subject)
                if permanent and any(e.live for e in entries):
                    raise SubjectNotSoftDeleted(subject)
                if not permanent and not any(e.live for e in entries):
                    raise SubjectSoftDeleted(subject)
                targets = entries if permanent else [e for e in entries if e.live]
            for entry in targets:
                self._mark_deleted(entry, permanent)
            if permanent:
                self.store.write(config_key(subject), None)
            return [e.version for e in targets]

    def delete_version(self, subject: str, version: int | str, permanent: bool = False) -> int:
        with self._write_lock:
            with self.store.lock:
                entry = self._entry(subject, version, include_deleted=True)
                if version == "latest" and not permanent:
                    entry = self._entry(subject, "latest")
                if permanent and entry.live:
                    raise VersionNotSoftDeleted(subject, entry.version)
                if not permanent and not entry.live:
                    raise VersionSoftDeleted(subject, entry.version)
            self._mark_deleted(entry, permanent)
            return entry.version

    def _mark_deleted(self, entry: VersionEntry, permanent: bool) -> None:
        text = self.state.text_by_id.get(entry.id)
        if not self._write_entry(replace(entry, deleted=True, hard_deleted=permanent), text):
            raise RegistryError("Delete was not applied; retry the request")

    # -- schemas by id -------------------------------------------------------------------

    def schema_by_id(self, sid: int) -> str:
        with self.store.lock:
            text = self.state.schema_text(sid)
        if text is None:
            raise SchemaNotFound(f"Schema {sid} not found")
        return text

    def subjects_for_id(self, sid: int, include_deleted: bool = False) -> list[str]:
        return sorted({e["subject"] for e in self.versions_for_id(sid, include_deleted)})

    def versions_for_id(self, sid: int, include_deleted: bool = False) -> list[dict[str, Any]]:
        self.schema_by_id(sid)
        with self.store.lock:
            return [
                {"subject": e.subject, "version": e.version}
                for e in self.state.entries_for_id(sid, include_deleted)
            ]

    # -- compatibility and config --------------------------------------------------------

    def test_compatibility(
        self, subject: str, version: int | str | None, body: dict[str, Any]
    ) -> list[str]:
        """Incompatibility messages of the body's schema against one or all versions."""
        _schema_type(body)
        parsed = parse_schema(body.get("schema"))
        with self.store.lock:
            level = self.state.level(subject)
            if version is None:
                existing = self._parsed_versions(subject)
                return check(level, parsed, existing)
            entry = self._entry(subject, version)
            target = parse_schema(self.state.text_by_id[entry.id])
            # Against one named version the transitive distinction does not apply.
            return check(Level(level.value.removesuffix("_TRANSITIVE")), parsed, [target])

    def get_config(self, subject: str | None, default_to_global: bool = False) -> Level:
        with self.store.lock:
            if subject is not None and subject not in self.state.configs and not default_to_global:
                raise SubjectConfigNotFound(subject)
            return self.state.level(subject)

    def set_config(self, subject: str | None, body: dict[str, Any]) -> Level:
        level = Level.parse(body.get("compatibility", body.get("compatibilityLevel")))
        with self._write_lock:
            self.store.write(config_key(subject), _config_value(level))
        return level

    def delete_config(self, subject: str | None) -> Level:
        with self._write_lock:
            with self.store.lock:
                previous = self.state.level(subject)
                if subject is not None and subject not in self.state.configs:
                    raise SubjectConfigNotFound(subject)
            self.store.write(config_key(subject), None)
        return previous


def _config_value(level: Level) -> bytes:
    return json.dumps({"compatibilityLevel": level.value}).encode()
