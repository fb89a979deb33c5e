"""``sealstream worker``: run a stream processor (any number share the partitions)."""

from __future__ import annotations

import logging
from typing import Any

import typer

from ops.cli.common import LOGLEVEL, configure, settings_of
from sealstream.keys import load_hmac_keyring

MASK_KEYS_FILE = "mask.json"


def worker(
    ctx: typer.Context,
    loglevel: str | None = LOGLEVEL,
) -> None:
    """Consume events.raw, sign and route to events.signed (dead letters to events.raw.dlq)."""
    from streams.app import build_processor, create_app

    handler = configure(loglevel, "worker")
    config = settings_of(ctx)
    config.kafka_role = "worker"  # its own principal on the secured local stack
    settings, kafka, keys = config.worker, config.kafka, config.keys
    signing = load_hmac_keyring(keys)
    processor, checkpoint_encoder = build_processor(
        settings, config.registry, signing, load_hmac_keyring(keys, MASK_KEYS_FILE)
    )
    if settings.tenants_topic:
        from sealstream.follow import TopicFollower
        from streams.enrich import TenantDirectory

        for enricher in processor.pipeline.enrichers:
            if isinstance(enricher, TenantDirectory):  # file first, topic records on top
                TopicFollower(
                    kafka, settings.tenants_topic, enricher.apply_record, "worker-tenants"
                )
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, settings.metrics_host)
    from sealstream.topics import record_limit

    signed_limit, _ = record_limit(kafka, [settings.signed_topic])
    app = create_app(
        settings, kafka, processor, signing, checkpoint_encoder, signed_limit=signed_limit
    )
    faust_worker(app, handler).execute_from_commandline()


def faust_worker(app: Any, handler: logging.Handler) -> Any:
    """faust's worker for ``app``. mode (faust's service layer) sets logging up again when
    the worker starts: on the process's handler (sealstream/logs.py, given through the app's
    ``loghandlers``, which faust's Worker passes on), at the same level."""
    from faust.worker import Worker

    level = logging.getLevelName(logging.getLogger().level)
    app.conf.loghandlers = [handler]
    worker = Worker(
        app,
        loglevel=level,
        quiet=True,
        logging_config={"version": 1, "disable_existing_loggers": False, "root": {"level": level}},
    )
    # faust's terminal spinner, at warning and above, adds a handler of its own and puts the
    # root logger at DEBUG (every library's debug line made, then dropped): none
    worker.spinner = None
    return worker
