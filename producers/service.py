"""The ingest pipeline for one request, after authentication:

rate-limit -> parse -> per event: envelope, authorize, payload -> deduplicate -> encode ->
produce and await acks -> receipts -> response.

Batch semantics: each event is judged on its own. Invalid or unauthorized events are rejected
and reported with their index; valid ones in the same batch are accepted. An event is reported
accepted only after Kafka acknowledged it; if Kafka fails for some events, those are reported
with status 503 and the client retries them with the same ``event_id`` (deduplicated).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import fastavro
import orjson

from producers import cloudevents
from producers.dedup import ReceiptStore
from producers.errors import GatewayError, RateLimited, RecordRefused, Unavailable
from producers.framing import Event, Framer, FrameWindow
from producers.ids import uuid7
from producers.kafka import Ack, AsyncProducer, PendingBatch, Record
from producers.limits import RecordLimits
from producers.metrics import Metrics
from producers.policy import Decision, PolicyStore
from producers.ratelimit import RateLimiter, Verdict
from producers.receipts import ReceiptIssuer, SigningWindow
from producers.results import Accepted, Published, Rejected
from producers.schemabook import EventTypeInfo, SchemaBook
from producers.validation import (
    EventIn,
    FieldError,
    TimeWindow,
    check_envelope,
    check_payload,
    parse_body,
    split_events,
)
from sealstream.auth import Principal
from sealstream.settings import GatewaySettings

log = logging.getLogger("sealstream.gateway")


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    correlation_id: str
    client_ip: str | None = None
    user_agent: str | None = None
    client_cert: str | None = None  # the subject of a TLS client certificate (mutual TLS)
    # traceparent/tracestate of the request's span: every event of the request carries them
    trace: tuple[tuple[str, bytes], ...] = ()


@dataclass
class _Pending:
    index: int
    event: EventIn
    event_id: str
    datum: dict[str, Any]
    decision: Decision
    payload_sha256: str  # of the payload's canonical JSON, as in the receipt
    prefix: str  # of its field paths: "events[3]" in a batch, "" for a single event

    @functools.cached_property
    def claim_key(self) -> str:  # asked for five times per event on the hot path
        return ReceiptStore.key(self.event.tenant, self.event_id)


def _millis(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(microsecond=moment.microsecond // 1000 * 1000)


class IngestService:
    def __init__(
        self,
        settings: GatewaySettings,
        policy: PolicyStore,
        limiter: RateLimiter,
        producer: AsyncProducer,
        book: SchemaBook,
        issuer: ReceiptIssuer,
        receipts: ReceiptStore,
        metrics: Metrics,
        limits: RecordLimits,
        framer: Framer,
    ) -> None:
        self.settings = settings
        self.frames = FrameWindow(framer, producer)
        self.policy = policy
        self.limiter = limiter
        self.producer = producer
        self.book = book
        self.issuer = issuer
        self.receipts = receipts
        # receipts are stored (index and topic) as soon as they are signed
        self.signing = SigningWindow(issuer, receipts.put)
        self.metrics = metrics
        self.limits = limits
        self.window = TimeWindow(
            dt.timedelta(seconds=settings.occurred_at_max_age_s),
            dt.timedelta(seconds=settings.occurred_at_max_ahead_s),
        )

    def _tenant_label(self, principal: Principal, tenant: Any) -> str:
        """A metrics label: the caller's own tenant or a configured one, else ``unknown`` (a
        label taken from a request body would let any client create series without end)."""
        if tenant == principal.tenant or (
            isinstance(tenant, str) and tenant in self.policy.policy.doc.tenants
        ):
            return str(tenant)
        return "unknown"

    def _charge(self, principal: Principal, cost: int) -> Verdict:
        """Take ``cost`` from the caller's rate limits; RateLimited when they are spent."""
        verdict = self.limiter.take(principal.tenant, principal.subject, cost=cost)
        if not verdict.allowed:
            self.metrics.rejected.labels(principal.tenant, "", "rate_limited").inc(cost)
            raise RateLimited(
                f"rate limit for this {verdict.scope} exceeded; retry after "
                f"{verdict.retry_after_s:.2f} s",
                verdict.retry_after_s,
                verdict=verdict,
            )
        return verdict

    def _type_label(self, event_type: Any) -> str:
        return str(event_type) if self.book.get(str(event_type)) is not None else "unknown"

    # -- the request ----------------------------------------------------------------------

    async def publish(
        self,
        principal: Principal,
        raw: bytes,
        ctx: RequestContext,
        cloud: tuple[str, Mapping[str, str]] | None = None,
    ) -> Published:
        """Each event of the request accepted (Kafka has it) or rejected; raises the request's
        own errors (malformed body, too large, rate limited). ``cloud``: the request is
        CloudEvents (its mode and headers, producers/cloudevents.py)."""
        try:
            body = parse_body(raw, self.settings.max_body_bytes, self.settings.max_json_depth)
            if cloud is None:
                events, is_batch = split_events(body, self.settings.max_events_per_batch)
            else:
                events, is_batch = cloudevents.events_of(
                    cloud[0], body, cloud[1], principal.tenant, self.settings.max_events_per_batch
                )
        except GatewayError:  # a body refused whole costs as one event: refusals are no free
            self._charge(principal, 1)  # work (a flood of them is 429 like any other)
            raise
        verdict = self._charge(principal, len(events))

        rejected: list[Rejected] = []
        pending: list[_Pending] = []
        decisions: list[tuple[Decision, EventIn | None, int]] = []
        now = dt.datetime.now(dt.UTC)
        first_index: dict[str, int] = {}  # claim key -> index of its first event in the batch
        for index, raw_event in enumerate(events):
            prefix = f"events[{index}]" if is_batch else ""
            result = self._check(principal, raw_event, index, prefix, decisions, ctx, now)
            if not isinstance(result, _Pending):
                rejected.append(result)
            elif result.claim_key in first_index:
                # one event, one signature: a second copy in the same batch is refused, whatever
                # its key or payload (an attack run got two receipts and two chain entries)
                rejected.append(self._duplicate_in_batch(principal, result, first_index))
            else:
                first_index[result.claim_key] = index
                pending.append(result)

        accepted, failed = await self._produce(principal, pending, decisions, ctx)
        rejected.extend(failed)
        rejected.sort(key=lambda r: r.index)
        if cloud is not None:  # errors name the CloudEvents attributes
            rejected = [
                replace(r, error=cloudevents.as_attributes(r.error))
                if isinstance(r.error, FieldError) else r
                for r in rejected
            ]  # fmt: skip
        return Published(is_batch, accepted, rejected, verdict)

    def _check(
        self,
        principal: Principal,
        raw_event: Any,
        index: int,
        prefix: str,
        decisions: list[tuple[Decision, EventIn | None, int]],
        ctx: RequestContext,
        now: dt.datetime,
    ) -> _Pending | Rejected:
        def reject(status: int, error: FieldError, event_type: str = "") -> Rejected:
            tenant = raw_event.get("tenant") if isinstance(raw_event, dict) else None
            self.metrics.rejected.labels(
                self._tenant_label(principal, tenant), self._type_label(event_type), error.code
            ).inc()
            return Rejected(index, status, error)

        if isinstance(raw_event, FieldError):  # no CloudEvent (producers/cloudevents.py)
            return reject(422, raw_event)
        event = check_envelope(raw_event, index, prefix, self.window, now)
        if isinstance(event, FieldError):
            return reject(422, event)
        info = self.book.get(event.event_type)
        if info is None:
            known = ", ".join(self.book.names())
            err = FieldError(
                index,
                f"{prefix}.event_type" if prefix else "event_type",
                "unknown_event_type",
                f"no schema for event type {event.event_type!r}; known: {known}",
            )
            return reject(422, err, event.event_type)
        decision = self.policy.decide(principal, "publish", event.event_type, event.tenant)
        decisions.append((decision, event, index))
        if not decision.allow:
            self.metrics.denied.labels(
                self._tenant_label(principal, event.tenant), event.event_type, decision.reason
            ).inc()
            log.warning(
                "authz_denied subject=%s token_tenant=%s event_tenant=%s event_type=%s "
                "reason=%s policy=%s correlation_id=%s",
                principal.subject,
                principal.tenant,
                event.tenant,
                event.event_type,
                decision.reason,
                decision.policy_version,
                ctx.correlation_id,
            )
            err = FieldError(
                index,
                f"{prefix}.tenant"
                if decision.reason == "DENY_TENANT_MISMATCH" and prefix
                else ("tenant" if decision.reason == "DENY_TENANT_MISMATCH" else prefix or "$"),
                decision.reason.lower(),
                f"not authorized to publish {event.event_type!r} for tenant {event.tenant!r} "
                f"({decision.reason}, policy {decision.policy_version})",
            )
            return reject(403, err, event.event_type)
        datum = check_payload(
            event.payload, info.payload_schema, info.payload_parsed, index, prefix
        )
        if isinstance(datum, FieldError):
            return reject(422, datum, event.event_type)
        payload_json = orjson.dumps(event.payload, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(payload_json).hexdigest()
        too_large = self.limits.refusal(len(payload_json), info.pii_fields, principal.subject)
        if too_large is not None:
            err = FieldError(
                index, f"{prefix}.payload" if prefix else "payload", "event_too_large", too_large
            )
            return reject(413, err, event.event_type)
        event_id = str(event.event_id) if event.event_id is not None else str(uuid7())
        return _Pending(index, event, event_id, datum, decision, digest, prefix)

    def _duplicate_in_batch(
        self, principal: Principal, item: _Pending, first_index: dict[str, int]
    ) -> Rejected:
        first = first_index[item.claim_key]
        error = FieldError(
            item.index,
            f"{item.prefix}.event_id",
            "duplicate_event_id",
            f"event_id {item.event_id} is also the id of events[{first}] in this batch; "
            "give every event its own id",
        )
        self.metrics.rejected.labels(
            self._tenant_label(principal, item.event.tenant),
            item.event.event_type,
            error.code,
        ).inc()
        return Rejected(item.index, 409, error, item.event_id)

    def _conflict(self, principal: Principal, item: _Pending, known: dict[str, Any]) -> Rejected:
        """A known event id sent with other content: not a retry, so not answered as one."""
        error = FieldError(
            item.index,
            f"{item.prefix}.event_id" if item.prefix else "event_id",
            "event_id_conflict",
            f"event_id {item.event_id} was accepted with other content (event type "
            f"{known.get('event_type')!r}, payload_sha256 {known.get('payload_sha256')}); a retry "
            "must send the same event, a new event needs a new id",
        )
        self.metrics.rejected.labels(
            self._tenant_label(principal, item.event.tenant), item.event.event_type, error.code
        ).inc()
        return Rejected(item.index, 409, error, item.event_id, {"receipt": known})

    # -- producing ------------------------------------------------------------------------

    def _encode(
        self,
        principal: Principal,
        item: _Pending,
        info: EventTypeInfo,
        received: dt.datetime,
        ctx: RequestContext,
    ) -> tuple[bytes, bytes]:
        record = {
            "event_id": item.event_id,
            "tenant": item.event.tenant,
            "event_type": item.event.event_type,
            "occurred_at": _millis(item.event.occurred_at),
            "received_at": received,
            "producer": principal.subject,
            "correlation_id": item.event.correlation_id or ctx.correlation_id,
            "request_id": ctx.request_id,
            "source": item.event.source,
            "payload_sha256": item.payload_sha256,
            "payload": item.datum,
        }
        buf = io.BytesIO()
        buf.write(info.wire_header)
        fastavro.schemaless_writer(buf, info.event_parsed, record)
        # The partition follows (tenant, event_id): every copy of an event (a retry the gateway
        # could not recognize, whatever key it came with) reaches the same chain, whose worker
        # drops it (streams/dedup.py). The entity key travels as a header.
        return buf.getvalue(), item.claim_key.encode()

    async def _produce(
        self,
        principal: Principal,
        pending: list[_Pending],
        decisions: list[tuple[Decision, EventIn | None, int]],
        ctx: RequestContext,
    ) -> tuple[list[Accepted], list[Rejected]]:
        """Produce the request's events and its audit decisions as two batches, await them
        together, then issue receipts for what Kafka acknowledged.

        An event id this gateway is producing for another request right now is waited for, so
        two concurrent requests for one event get one record and one receipt."""
        accepted: list[Accepted] = []
        failed: list[Rejected] = []
        to_send: list[_Pending] = []
        events_out: list[Event] = []
        duplicates: Counter[tuple[str, str]] = Counter()
        await self.receipts.wait_unclaimed([item.claim_key for item in pending])
        received = _millis(dt.datetime.now(dt.UTC))
        claimed: list[str] = []
        try:
            for item in pending:
                known = self.receipts.get(item.event.tenant, item.event_id)
                if known is not None and not _same_event(known, item):
                    failed.append(self._conflict(principal, item, known))
                    continue
                if known is not None:  # a retry of an accepted event: same receipt, no record
                    duplicates[item.event.tenant, item.event.event_type] += 1
                    accepted.append(Accepted(item.index, item.event_id, known, duplicate=True))
                    continue
                self.receipts.claim(item.claim_key)
                claimed.append(item.claim_key)
                info = self.book.get(item.event.event_type)
                assert info is not None
                value, key = self._encode(principal, item, info, received, ctx)
                events_out.append((value, key, self._headers(item, info, ctx)))
                to_send.append(item)
            for (tenant, event_type), count in duplicates.items():
                self.metrics.duplicates.labels(tenant, event_type).inc(count)
            # a frame per partition, shared with the tenant's other requests of this loop
            # turn; each event's ack is its frame's
            audit = self._log_decisions(principal, decisions, ctx)
            acks: list[Ack | Unavailable | RecordRefused] = []
            if events_out:
                events, placed = await self.frames.produce(principal.tenant, events_out)
                frame_acks = await events.wait(self.settings.produce_timeout_s)
                acks = [frame_acks[slot] for slot in placed]
            if audit is not None:
                lost = [r for r in await audit.wait() if not isinstance(r, Ack)]
                if lost:
                    log.error("audit decisions not written count=%d error=%s", len(lost), lost[0])
            if to_send:
                await self._receipts_for(principal, to_send, acks, received, accepted, failed)
        finally:
            for claim_key in claimed:
                self.receipts.unclaim(claim_key)
        return accepted, failed

    def _headers(
        self, item: _Pending, info: EventTypeInfo, ctx: RequestContext
    ) -> list[tuple[str, str | bytes | None]]:
        headers: list[tuple[str, str | bytes | None]] = [
            ("correlation_id", (item.event.correlation_id or ctx.correlation_id).encode()),
            ("request_id", ctx.request_id.encode()),
            ("schema_id", info.schema_id_header),
            ("event_type", item.event.event_type.encode()),
            ("tenant", item.event.tenant.encode()),
            # dead letters keep their source headers: the audit trail finds them by it
            ("event_id", item.event_id.encode()),
        ]
        entity = item.event.key or info.key_for(item.datum)
        if entity:
            headers.append(("entity_key", entity.encode()))
        if ctx.client_ip:
            headers.append(("client_ip", ctx.client_ip.encode()))
        if ctx.user_agent:
            headers.append(("user_agent", ctx.user_agent.encode(errors="replace")))
        headers.extend(ctx.trace)
        return headers

    async def _receipts_for(
        self,
        principal: Principal,
        to_send: list[_Pending],
        acks: list[Ack | Unavailable | RecordRefused],
        received: dt.datetime,
        accepted: list[Accepted],
        failed: list[Rejected],
    ) -> None:
        when = received.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        counts: Counter[tuple[str, str]] = Counter()
        refused: Counter[tuple[str, str, str]] = Counter()
        acked: list[tuple[_Pending, Ack]] = []
        for item, ack in zip(to_send, acks, strict=True):
            if isinstance(ack, Ack):
                acked.append((item, ack))
                continue
            # Never reported accepted. Unavailable: not acknowledged in time; if Kafka does take
            # it later, the client's retry with the same event_id is dropped downstream.
            # RecordRefused: Kafka can never take it (too large, invalid): a retry cannot help.
            failed.append(Rejected(item.index, ack.status, ack, item.event_id))
            refused[item.event.tenant, item.event.event_type, ack.code] += 1
        # one tree, one signature for every event Kafka acknowledged of this request and of the
        # caller's tenant's other requests that reach this point in the same loop turn
        leaves = [
            {
                "event_id": item.event_id,
                "tenant": item.event.tenant,
                "event_type": item.event.event_type,
                "payload_sha256": item.payload_sha256,
                "received_at": when,
                "topic": ack.topic,
                "partition": ack.partition,
                "offset": ack.offset,
            }
            for item, ack in acked
        ]
        receipts = await self.signing.issue(principal.tenant, leaves) if leaves else []
        for (item, _), receipt in zip(acked, receipts, strict=True):
            counts[item.event.tenant, item.event.event_type] += 1
            accepted.append(Accepted(item.index, item.event_id, receipt))
        # one labelled child per (tenant, event_type) and request, not one look-up per event
        for (tenant, event_type), count in counts.items():
            self.metrics.accepted.labels(tenant, event_type).inc(count)
        for (tenant, event_type, code), count in refused.items():
            self.metrics.rejected.labels(tenant, event_type, code).inc(count)

    def _log_decisions(
        self,
        principal: Principal,
        decisions: list[tuple[Decision, EventIn | None, int]],
        ctx: RequestContext,
    ) -> PendingBatch | None:
        """The request's authorization decisions as Avro records on ``audit.decisions``,
        enqueued as one batch; the caller awaits their acknowledgements with the events'.

        Denials are written one per event (each is a finding of its own). Allowed events are
        written one record per request and (event tenant, event type, correlation id): the
        trail finds an event's decision by its request id, and a batch of 100 allowed events
        costs one record, not 100."""
        if not decisions:
            return None
        decided_at = _millis(dt.datetime.now(dt.UTC))
        key = principal.tenant.encode()
        topic = self.settings.decisions_topic
        records: list[Record] = []
        allowed: set[tuple[str, str | None, str, str, str]] = set()
        for decision, event, _ in decisions:
            event_tenant = event.tenant if event else principal.tenant
            event_type = event.event_type if event else None
            correlation_id = (event.correlation_id if event else None) or ctx.correlation_id
            if decision.allow:
                group = (
                    event_tenant,
                    event_type,
                    correlation_id,
                    decision.reason,
                    decision.policy_version,
                )
                if group in allowed:
                    continue
                allowed.add(group)
            value = self.book.encode_decision(
                {
                    "subject": principal.subject,
                    "tenant": principal.tenant,
                    "event_tenant": event_tenant,
                    "event_type": event_type,
                    "action": "publish",
                    "decision": "ALLOW" if decision.allow else "DENY",
                    "reason_code": decision.reason,
                    "policy_version": decision.policy_version,
                    "request_id": ctx.request_id,
                    "correlation_id": correlation_id,
                    "decided_at": decided_at,
                    "client_ip": ctx.client_ip,
                    "user_agent": ctx.user_agent,
                    "client_cert": ctx.client_cert,
                }
            )
            records.append((topic, value, key, None, None))
        return self.producer.produce_batch(records)


def _same_event(receipt: dict[str, Any], item: _Pending) -> bool:
    """A retry sends the event it sent before: same type, same payload bytes."""
    return (
        receipt.get("event_type") == item.event.event_type
        and receipt.get("payload_sha256") == item.payload_sha256
    )
