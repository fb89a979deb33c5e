"""``python -m schemas.registry``: run the registry server with settings from the environment."""

from __future__ import annotations

from schemas.registry.server import serve
from sealstream.logs import LogSettingError, configure_logging
from sealstream.settings import KafkaSettings, RegistrySettings

if __name__ == "__main__":
    try:
        configure_logging(service="registry")
    except LogSettingError as exc:  # a message, not a traceback
        raise SystemExit(f"error: {exc}") from None
    serve(KafkaSettings(), RegistrySettings())
