"""``python -m schemas.registry``: run the registry server with settings from the environment."""

from __future__ import annotations

from schemas.registry.server import serve
from sealstream.logs import configure_logging
from sealstream.settings import KafkaSettings, RegistrySettings

if __name__ == "__main__":
    configure_logging(service="registry")
    serve(KafkaSettings(), RegistrySettings())
