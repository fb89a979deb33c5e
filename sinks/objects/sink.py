"""The object-store sink: signed events into Avro container files in the cold store.

A batch (one partition's offset range, rotated by records, bytes and age: SinkSettings
``objects_max_*``) becomes one file per (tenant, event type, hour, schema id) plus a manifest
each; the data file is put first, its manifest second, and the offsets move only after both
are durable. The cold copy is the full signed record, original payload included (events
routed ``hot`` only are not stored cold).
"""

from __future__ import annotations

import logging
from typing import Any

from obstore.exceptions import BaseError as ObjectStoreError

from schemas.serde import WIRE_HEADER_SIZE, Decoder, UnknownSchemaError, WireFormatError
from sealstream.settings import ObjectStoreSettings
from sinks.objects.files import BucketKey, ColdFile, bucket_of, object_path
from sinks.objects.store import ObjectStore
from sinks.runner import EVENTS, Batch, Rejected, StoreUnavailable

log = logging.getLogger("sealstream.sink.objects")


class ColdStore:
    name = "objects"

    def __init__(self, store: ObjectStore, settings: ObjectStoreSettings, decoder: Decoder) -> None:
        self.store = store
        self.settings = settings
        self.decoder = decoder

    def files(self, batch: Batch) -> tuple[list[ColdFile], list[Rejected]]:
        """The batch's records grouped into files (deterministic for the same batch)."""
        buckets: dict[BucketKey, list[tuple[int, dict[str, Any], bytes]]] = {}
        rejected: list[Rejected] = []
        for message in batch.records:
            value = message.value() or b""
            try:
                schema_id, record = self.decoder.decode(value)
            except UnknownSchemaError as exc:
                rejected.append(Rejected(message, "unknown_schema", str(exc)))
                continue
            except WireFormatError as exc:
                rejected.append(Rejected(message, "undecodable", str(exc)))
                continue
            try:
                if record["route"] == "hot":
                    continue
                key = bucket_of(record, schema_id)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                rejected.append(Rejected(message, "unconvertible", f"{type(exc).__name__}: {exc}"))
                continue
            buckets.setdefault(key, []).append((int(message.offset() or 0), record, value))
        files = []
        for key, items in buckets.items():
            offsets = [o for o, _, _ in items]
            path = object_path(
                self.settings.prefix, key, batch.topic, batch.partition, offsets[0], offsets[-1]
            )
            records = [r for _, r, _ in items]
            bodies = [v[WIRE_HEADER_SIZE:] for _, _, v in items]  # stored as received
            files.append(
                ColdFile(path, key, batch.topic, batch.partition, records, offsets, bodies)
            )
        files.sort(key=lambda f: f.path)
        return files, rejected

    def write(self, batch: Batch) -> list[Rejected]:
        files, rejected = self.files(batch)
        for cold in files:
            data, manifest = cold.build(
                self.decoder.schema(cold.key.schema_id), self.settings.codec
            )
            try:
                self.store.put(cold.path, data)
                self.store.put(cold.path + ".manifest.json", manifest)
            except (ObjectStoreError, OSError) as exc:  # network, 5xx, disk: retried
                raise StoreUnavailable(f"put {cold.path} failed: {exc}") from exc
        for cold in files:
            EVENTS.labels(self.name, cold.key.tenant, cold.key.event_type).inc(len(cold.records))
        return rejected

    def after_outage(self, since: float) -> None:
        """Nothing to check: a put is whole or absent (obstore writes a local file through a
        temporary one, an S3 PUT is atomic), and a batch cut short is written again whole."""

    def close(self) -> None:
        pass
