"""Who performs an operator action, and its record in the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ops.errors import Forbidden
from ops.feedback import SILENT, Feedback
from ops.settings import Settings


@dataclass(frozen=True)
class Actor:
    """Who acts, and the tenant the action is limited to (None: every tenant)."""

    who: str
    tenant: str | None = None


def identify(settings: Settings, token: str | None, scope: str) -> Actor:
    """The actor behind ``token``, which needs ``scope``; without a token the local operator
    acts (access to this machine's keyring is the credential)."""
    from schemas.audit import local_operator

    if token is None:
        return Actor(local_operator())
    from sealstream.auth import AuthenticationError, Keyring, TokenVerifier

    auth = settings.token_auth
    try:
        principal = TokenVerifier(auth, Keyring.from_settings(auth)).verify(token)
    except AuthenticationError as exc:
        raise Forbidden(f"token refused: {exc.code}: {exc.message}") from exc
    if scope not in principal.scopes:
        raise Forbidden(f"the token lacks the '{scope}' scope")
    return Actor(principal.subject, principal.tenant)


def record(
    settings: Settings,
    action: str,
    detail: dict[str, Any],
    ok: bool,
    actor: str | None = None,
    feedback: Feedback = SILENT,
) -> None:
    """Record an operator action twice: a decision record on ``audit.decisions`` (queryable at
    once) and an ``operator_action`` event on the raw topic, which the processors sign and
    chain like any other event. A tool whose records cannot be written says so."""
    from schemas.audit import AuditLog, local_operator, publish_operator_action

    who = actor or local_operator()
    kafka, registry = settings.kafka, settings.registry
    try:
        log = AuditLog(kafka, registry, settings.sink.decisions_topic)
        log.record(
            subject=who,
            tenant="*",
            action=action,
            allow=True,
            reason="OPS_OK" if ok else "OPS_PROBLEMS",
            detail=detail,
        )
        publish_operator_action(
            kafka,
            registry,
            settings.worker.raw_topic,
            actor=who,
            action=action,
            ok=ok,
            detail=detail,
        )
    except Exception as exc:  # the tool's result stands; the missing record is reported
        feedback.warn(f"audit record for {action} not written: {exc}")
