"""``python -m schemas.registry``: run the registry server with settings from the environment."""

from __future__ import annotations

import logging

from schemas.registry.server import serve
from sealstream.settings import KafkaSettings, RegistrySettings

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(KafkaSettings(), RegistrySettings())
