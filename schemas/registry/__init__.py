"""Sealstream's schema registry: the Confluent Schema Registry REST API for Avro, with its
state in the compacted Kafka topic ``_schemas`` (see ``state.py`` for the record format)."""

from schemas.registry.app import build_app
from schemas.registry.service import Registry
from schemas.registry.state import RegistryState
from schemas.registry.store import KafkaStore

__all__ = ["KafkaStore", "Registry", "RegistryState", "build_app"]
