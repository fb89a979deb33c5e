"""Wiring: settings -> state, Kafka store, service, ASGI app (behind basic auth), uvicorn."""

from __future__ import annotations

import logging

import uvicorn
from starlette.applications import Starlette

from schemas.registry.app import build_app
from schemas.registry.auth import ASGIApp, BasicAuth, User, load_users
from schemas.registry.compat import Level
from schemas.registry.service import Registry
from schemas.registry.state import RegistryState
from schemas.registry.store import KafkaStore
from sealstream.settings import KafkaSettings, RegistrySettings

log = logging.getLogger("sealstream.registry")


def create(kafka: KafkaSettings, settings: RegistrySettings) -> tuple[Starlette, KafkaStore]:
    """Replay the store topic and return the app serving it, plus the store to close later."""
    state = RegistryState(default_level=Level.parse(settings.default_compatibility))
    store = KafkaStore(kafka, settings.topic, state, timeout_s=settings.write_timeout_s)
    store.start()
    log.info(
        "registry state loaded topic=%s subjects=%d max_id=%d",
        settings.topic,
        len(state.subjects),
        state.max_id,
    )
    return build_app(Registry(state, store), healthy=lambda: store.healthy), store


def users_of(settings: RegistrySettings) -> dict[str, User] | None:
    """The users who may change the registry, or None (no users file: anyone may)."""
    if settings.users_file is None:
        log.warning("registry: no users file; anyone who reaches it may change schemas")
        return None
    users = load_users(settings.users_file)
    log.info("registry: changes need a user with the write role (%d users)", len(users))
    return users


def serve(kafka: KafkaSettings, settings: RegistrySettings) -> None:
    users = users_of(settings)  # a bad or unsafe users file stops it before Kafka is touched
    app, store = create(kafka, settings)
    served: ASGIApp = app if users is None else BasicAuth(app, users, settings.auth_reads)
    try:
        uvicorn.run(
            served,
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=False,
            log_config=None,  # the process's handler (sealstream/logs.py), not uvicorn's
        )
    finally:
        store.close()
