"""The worker's processor, wired from settings: registry lookups, enrichers, masker, routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from schemas.catalog import Catalog, subject_for
from schemas.serde import Decoder, Encoder, registry_lookup
from sealstream.keys import HmacKeyring
from sealstream.settings import RegistrySettings, WorkerSettings
from streams.enrich import (
    ClientAttributes,
    PiiClassification,
    Pipeline,
    SlowTenant,
    TenantDirectory,
    TimeFields,
)
from streams.mask import Masker
from streams.processor import Processor
from streams.route import RoutingTable


def classification_map(policy_file: Path) -> tuple[dict[str, str], str]:
    """Event type -> data classification, read from the policy file the gateway enforces."""
    if not policy_file.exists():
        return {}, "internal"
    raw = yaml.safe_load(policy_file.read_text()) or {}
    return dict(raw.get("classification") or {}), str(raw.get("default_classification", "internal"))


def build_processor(
    settings: WorkerSettings,
    registry: RegistrySettings,
    keys: HmacKeyring,
    mask_keys: HmacKeyring,
    catalog: Catalog | None = None,
) -> tuple[Processor, Encoder]:
    """Wire the processor from settings: registry lookups, enrichers, masker, routes.

    Returns the processor and the checkpoint encoder. The signed-event and checkpoint schemas
    must be registered (``sealstream schemas register``).
    """
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    catalog = catalog or Catalog()
    client = SchemaRegistryClient(registry.client_config())

    def registered(topic: str, schema: dict[str, Any]) -> Encoder:
        subject = subject_for(topic, schema)
        found = client.lookup_schema(subject, Schema(json.dumps(schema), "AVRO"))
        if found.schema_id is None:
            raise RuntimeError(f"{subject} is not registered; run `sealstream schemas register`")
        return Encoder(int(found.schema_id), schema)

    pii = {t: catalog.pii_fields(t) for t in catalog.event_types()}
    classification, default = classification_map(settings.policy_file)
    pipeline = Pipeline(
        [
            TimeFields(),
            ClientAttributes(),
            PiiClassification(classification, pii, default),
            TenantDirectory(settings.tenants_file),
            *([SlowTenant(settings.fault_slow_tenant)] if settings.fault_slow_tenant else []),
        ]
    )
    processor = Processor(
        Decoder(registry_lookup(client)),
        pipeline,
        Masker(mask_keys, pii),
        RoutingTable.load(settings.routes_file),
        keys,
        registered(settings.signed_topic, catalog.signed_schema()),
    )
    return processor, registered(settings.checkpoints_topic, catalog.checkpoint_schema())
