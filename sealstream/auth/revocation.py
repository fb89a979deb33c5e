"""Token revocation through the compacted topic ``tokens.revoked``.

Records: key ``jti:<id>`` -> ``{"expires_at": <unix s>}`` revokes one token until it would
expire anyway; key ``sub:<subject>`` -> ``{"issued_before": <unix s>}`` revokes every token of
that subject issued up to then. A tombstone (null value) lifts the revocation. Every gateway
follows the topic, so a revocation takes effect everywhere within the follower's poll interval.
"""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Producer

from sealstream.auth.tokens import Revocations
from sealstream.follow import TopicFollower
from sealstream.settings import AuthSettings, KafkaSettings


def apply_record(revocations: Revocations, key: bytes | None, value: bytes | None) -> None:
    if not key:
        return
    kind, _, ident = key.decode().partition(":")
    doc = orjson.loads(value) if value else None
    if kind == "jti":
        if doc is None:
            revocations.reinstate_token(ident)
        else:
            revocations.revoke_token(ident, float(doc.get("expires_at", time.time() + 86400)))
    elif kind == "sub":
        if doc is None:
            revocations.reinstate_subject(ident)
        else:
            revocations.revoke_subject(ident, float(doc.get("issued_before", time.time())))


def follow(kafka: KafkaSettings, auth: AuthSettings, revocations: Revocations) -> TopicFollower:
    return TopicFollower(
        kafka,
        auth.revocation_topic,
        lambda k, v: apply_record(revocations, k, v),
        "gateway-revocations",
    )


def publish_revocation(
    kafka: KafkaSettings,
    auth: AuthSettings,
    jti: str | None = None,
    subject: str | None = None,
    expires_at: float | None = None,
    lift: bool = False,
) -> str:
    """Write one revocation (or its lifting) and wait until Kafka has it; return the key."""
    if (jti is None) == (subject is None):
        raise ValueError("give exactly one of jti or subject")
    if jti is not None:
        key = f"jti:{jti}"
        doc = {"expires_at": expires_at or time.time() + 7 * 86400, "revoked_at": time.time()}
    else:
        key = f"sub:{subject}"
        doc = {"issued_before": time.time(), "revoked_at": time.time()}
    producer = Producer(kafka.client_config(acks="all", enable_idempotence=True))
    errors: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer.produce(
        auth.revocation_topic,
        key=key.encode(),
        value=None if lift else orjson.dumps(doc),
        on_delivery=on_delivery,
    )
    if producer.flush(15) != 0 or errors:
        raise RuntimeError(f"revocation not written: {errors or 'timeout'}")
    return key
