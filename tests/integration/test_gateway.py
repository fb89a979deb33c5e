"""The ingest gateway against the real broker and registry."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from producers import cloudevents
from producers.receipts import verify_receipt
from schemas.frames import decode_frame, is_frame
from schemas.serde import Decoder, registry_lookup

pytestmark = pytest.mark.integration

PAYMENT = {
    "payment_id": "p-1",
    "account_id": "acc-7",
    "amount_minor": 1250,
    "currency": "EUR",
    "status": "CAPTURED",
    "method": "CARD",
    "merchant_id": "m-1",
    "payer_email": "ann@example.test",
}


def event(tenant: str = "acme", event_type: str = "payment", **extra: Any) -> dict[str, Any]:
    payload = extra.pop("payload", copy.deepcopy(PAYMENT))
    return {
        "event_type": event_type,
        "tenant": tenant,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "payload": payload,
        **extra,
    }


def post(gw: Any, body: Any, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    headers.setdefault("Content-Type", "application/json")
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{gw.url}/v1/events", content=raw, headers=headers, timeout=30)


class FramedMessage:
    """One event of a frame, read like the plain record it would otherwise be."""

    def __init__(self, msg: Any, framed: Any) -> None:
        self._msg, self._framed = msg, framed

    def key(self) -> bytes | None:
        return self._framed.key  # type: ignore[no-any-return]

    def value(self) -> bytes:
        return self._framed.value  # type: ignore[no-any-return]

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._framed.headers.items())

    def partition(self) -> int:
        return self._msg.partition()  # type: ignore[no-any-return]


def fetch(gw: Any, receipt: dict[str, Any]) -> Any:
    """The Kafka record a receipt points at (the event's own, when that record is a frame)."""
    consumer = Consumer(gw.stack.kafka_settings().client_config(group_id=f"r-{uuid.uuid4()}"))
    try:
        tp = TopicPartition(receipt["topic"], receipt["partition"], receipt["offset"])
        consumer.assign([tp])
        msg = consumer.poll(15)
        assert msg is not None and msg.error() is None
        if not is_frame(msg.value()):
            return msg
        (framed,) = [
            e
            for e in decode_frame(msg.value())
            if e.headers["event_id"] == receipt["event_id"].encode()
        ]
        return FramedMessage(msg, framed)
    finally:
        consumer.close()


def test_accepted_event_is_in_kafka_with_schema_id_headers_and_key(gateway: Any) -> None:
    response = post(gateway, event(), gateway.token(), **{"X-Correlation-ID": "corr-123"})
    assert response.status_code == 202, response.text
    body = response.json()
    receipt = body["receipt"]
    msg = fetch(gateway, receipt)
    headers = dict(msg.headers())
    with SchemaRegistryClient(gateway.stack.registry_config()) as client:
        schema_id, record = Decoder(registry_lookup(client)).decode(msg.value())
        latest = client.get_latest_version("events.raw-io.sealstream.events.PaymentEvent")
    assert schema_id == latest.schema_id == int(headers["schema_id"])
    assert record["event_id"] == body["event_id"] == receipt["event_id"]
    assert record["payload"]["payer_email"] == "ann@example.test"
    assert record["producer"] == "svc-test" and record["correlation_id"] == "corr-123"
    assert headers["correlation_id"] == b"corr-123"
    assert headers["request_id"].decode() == body["request_id"]
    # the partition follows (tenant, event_id): every copy of one event meets one chain, whose
    # worker drops the copy; the schema's entity key travels as a header
    assert msg.key() == f"acme/{body['event_id']}".encode()
    assert headers["entity_key"] == b"acc-7"
    assert response.headers["X-Correlation-ID"] == "corr-123"


def test_receipts_verify_offline_and_tampering_is_detected(gateway: Any) -> None:
    response = post(gateway, event(), gateway.token())
    receipt = response.json()["receipt"]
    jwks = httpx.get(f"{gateway.url}/.well-known/sealstream/keys").json()
    assert verify_receipt(receipt, jwks)
    assert not verify_receipt({**receipt, "offset": receipt["offset"] + 1}, jwks)
    again = httpx.get(
        f"{gateway.url}/v1/receipts/{receipt['event_id']}",
        headers={"Authorization": f"Bearer {gateway.token()}"},
    )
    assert again.status_code == 200 and again.json() == receipt
    other = httpx.get(
        f"{gateway.url}/v1/receipts/{receipt['event_id']}",
        headers={"Authorization": f"Bearer {gateway.token('globex')}"},
    )
    assert other.status_code == 404  # tenant-scoped


def test_a_batch_gets_one_signed_tree_and_the_cli_verifies_it_offline(
    gateway: Any, tmp_path: Any
) -> None:
    from typer.testing import CliRunner

    from ops.cli import app

    response = post(
        gateway, {"events": [event() for _ in range(7)] + [event("globex")]}, gateway.token()
    )
    assert response.status_code == 202, response.text
    body = response.json()
    receipts = [a["receipt"] for a in body["accepted"]]
    assert len(receipts) == 7
    # one signature for the request: every receipt names the same signed head
    assert {json.dumps(r["tree"], sort_keys=True) for r in receipts} == {
        json.dumps(receipts[0]["tree"], sort_keys=True)
    }
    assert receipts[0]["tree"]["tree_size"] == 7
    assert sorted(r["leaf_index"] for r in receipts) == list(range(7))
    # each receipt points at the Kafka record holding its event; 7 events on 6 partitions
    # share records (frames, schemas/frames.py), each event keeping its own key
    for receipt in receipts:
        assert fetch(gateway, receipt).key() == f"acme/{receipt['event_id']}".encode()
    assert len({(r["partition"], r["offset"]) for r in receipts}) < 7
    keys = tmp_path / "keys.json"
    keys.write_text(httpx.get(f"{gateway.url}/.well-known/sealstream/keys").text)
    kept = tmp_path / "responses.jsonl"
    kept.write_text(json.dumps(body) + "\n")
    result = CliRunner().invoke(app, ["receipts", "verify", str(kept), "--keys", str(keys)])
    assert result.exit_code == 0 and "7 of 7 receipts valid" in result.output, result.output
    receipts[5]["payload_sha256"] = "0" * 64
    kept.write_text(json.dumps(receipts))
    result = CliRunner().invoke(app, ["receipts", "verify", str(kept), "--keys", str(keys)])
    assert result.exit_code == 1 and "6 of 7 receipts valid" in result.output, result.output


def test_repeated_event_id_returns_first_receipt_and_produces_nothing(gateway: Any) -> None:
    event_id = str(uuid.uuid4())
    first = post(gateway, event(event_id=event_id), gateway.token())
    before = gateway.raw_mark()
    second = post(gateway, event(event_id=event_id), gateway.token())
    assert second.status_code == 202
    assert second.json()["receipt"] == first.json()["receipt"]
    assert second.json()["duplicate"] is True
    assert gateway.raw_events_since(before) == 0


def _sign_raw(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def _bad_tokens(gw: Any) -> dict[str, str]:
    now = int(time.time())
    kid, secret = gw.keyring.signing_secret()
    claims = {
        "iss": gw.auth.issuer,
        "aud": gw.auth.audience,
        "sub": "svc",
        "tenant": "acme",
        "scope": "events:write",
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
    }
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}

    def signed(c: dict[str, Any] | None = None, h: dict[str, Any] | None = None) -> str:
        return _sign_raw({**header, **(h or {})}, {**claims, **(c or {})}, secret)

    good = signed()
    head, body, sig = good.split(".")
    flipped = bytearray(base64.urlsafe_b64decode(sig + "=="))
    flipped[-1] ^= 1
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = {
        f"alg_{alg}": ".".join(_sign_raw({**header, "alg": alg}, claims, b"").split(".")[:2]) + "."
        for alg in ("none", "None", "NONE", "nOnE")
    }
    tokens.update(
        {
            "flipped_signature": f"{head}.{body}."
            + base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode(),
            "expired": signed({"exp": now - 3600, "iat": now - 4000}),
            "nbf_future": signed({"nbf": now + 3600}),
            "missing_iss": _sign_raw(
                header, {k: v for k, v in claims.items() if k != "iss"}, secret
            ),
            "wrong_iss": signed({"iss": "https://evil.example"}),
            "partial_iss": signed({"iss": gw.auth.issuer[:-1]}),
            "missing_aud": _sign_raw(
                header, {k: v for k, v in claims.items() if k != "aud"}, secret
            ),
            "wrong_aud": signed({"aud": "other-service"}),
            "partial_aud": signed({"aud": gw.auth.audience + "x"}),
            "unknown_crit": signed(h={"crit": ["b64"], "b64": False}),
            "hostile_kid": signed(h={"kid": "../../../../dev/null"}),
            "sql_kid": signed(h={"kid": "x' UNION SELECT 'key"}),
            "oversized": signed({"pad": "x" * 10_000}),
            "rotated_out_key": _sign_raw({**header, "kid": "old-key"}, claims, b"k" * 40),
            "wrong_typ": signed(h={"typ": "JWE"}),
            "jku_x5u_jwk": jwt.encode(
                claims,
                attacker,
                algorithm="RS256",
                headers={
                    "kid": kid,
                    "typ": "JWT",
                    "jku": "http://127.0.0.1:1/jwks",
                    "x5u": "http://127.0.0.1:1/cert",
                },
            ),
            "hs256_with_public_key_as_secret": _sign_raw(
                header,
                claims,
                attacker.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
            ),
        }
    )
    return tokens


def test_jwt_negative_suite_answers_401_and_produces_nothing(gateway: Any) -> None:
    before = gateway.raw_mark()
    for name, token in _bad_tokens(gateway).items():
        response = post(gateway, event(), token)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"]["code"].startswith("token_"), name
        assert "WWW-Authenticate" in response.headers
    assert post(gateway, event(), None).status_code == 401
    assert gateway.raw_events_since(before) == 0


def test_revoked_token_is_refused_within_seconds(gateway: Any) -> None:
    from sealstream.auth.revocation import publish_revocation

    jti = str(uuid.uuid4())
    token = gateway.token(jti=jti)
    assert post(gateway, event(), token).status_code == 202  # now cached as verified
    publish_revocation(gateway.stack.kafka_settings(), gateway.auth, jti=jti)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = post(gateway, event(), token)
        if response.status_code == 401:
            assert response.json()["error"]["code"] == "token_revoked"
            break
        time.sleep(0.2)
    else:
        pytest.fail("revocation did not take effect within 10 s")


def test_cross_tenant_write_is_403_and_produces_nothing(gateway: Any) -> None:
    before = gateway.raw_mark()
    response = post(
        gateway,
        event(tenant="globex", event_type="page_view", payload={"session_id": "s", "url": "/"}),
        gateway.token(),
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "deny_tenant_mismatch"
    assert gateway.raw_events_since(before) == 0


def test_batch_accepts_valid_and_reports_each_invalid_one(gateway: Any) -> None:
    before = gateway.raw_mark()
    batch = {
        "events": [
            event(),
            event(payload={**PAYMENT, "amount_minor": "lots"}),
            event(tenant="globex"),
            event(colour="red"),
            event(),
        ]
    }
    response = post(gateway, batch, gateway.token())
    assert response.status_code == 202
    body = response.json()
    assert [a["index"] for a in body["accepted"]] == [0, 4]
    rejected = {r["index"]: r for r in body["rejected"]}
    assert rejected[1]["status"] == 422
    assert rejected[1]["error"]["field"] == "events[1].payload.amount_minor"
    assert rejected[2]["status"] == 403
    assert rejected[3]["error"] == {
        "index": 3,
        "field": "events[3].colour",
        "code": "unknown_field",
        "message": "Extra inputs are not permitted",
    }
    assert gateway.raw_events_since(before) == 2


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"event_type": ', 400, "json_malformed"),
        (b"[" * 100 + b"]" * 100, 400, "json_too_deep"),
        (b"x" * (1024 * 1024 + 1), 413, "body_too_large"),
        ({"events": [event()] * 501}, 413, "batch_too_large"),
        (event(event_type="unknown_type"), 422, "unknown_event_type"),
        (event(payload={"payment_id": "p"}), 422, "schema_mismatch"),
    ],
)
def test_bad_requests(gateway: Any, body: Any, status: int, code: str) -> None:
    before = gateway.raw_mark()
    response = post(gateway, body, gateway.token())
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert gateway.raw_events_since(before) == 0


def test_rate_limit_answers_429_with_headers(gateway: Any) -> None:
    # Tenant initech allows 200 events/s with a burst of 400 (config/policy.yaml).
    token = gateway.token("initech", sub=f"svc-{uuid.uuid4().hex[:6]}")
    first = post(gateway, {"events": [event("initech")] * 400}, token)  # the whole burst
    assert first.status_code == 202
    assert int(first.headers["RateLimit-Remaining"]) == 0
    second = post(gateway, {"events": [event("initech")] * 400}, token)  # needs 2 s of refill
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limited"
    assert int(second.headers["Retry-After"]) >= 1
    assert "RateLimit-Limit" in second.headers


def test_decisions_are_audited(gateway: Any) -> None:
    """Denials one record per event; the allowed events of a request one record per tenant
    and type (all are in Kafka when the 202 comes: the gateway awaits them)."""
    correlation = f"audit-{uuid.uuid4().hex[:8]}"
    post(
        gateway,
        {"events": [event(), event(tenant="globex"), event(), event(), event(tenant="initech")]},
        gateway.token(),
        **{"X-Correlation-ID": correlation},
    )
    found = decisions_of(gateway.stack, correlation)
    allowed = [r for r in found if r["decision"] == "ALLOW"]
    denied = [r for r in found if r["decision"] == "DENY"]
    assert len(allowed) == 1 and allowed[0]["reason_code"] == "ALLOW"
    assert (allowed[0]["event_tenant"], allowed[0]["event_type"]) == ("acme", "payment")
    assert sorted(r["event_tenant"] for r in denied) == ["globex", "initech"]
    assert {r["reason_code"] for r in denied} == {"DENY_TENANT_MISMATCH"}
    assert denied[0]["policy_version"].startswith("2026-11-22.1#")


def decisions_of(stack: Any, correlation: str) -> list[dict[str, Any]]:
    """The decision records on audit.decisions with ``correlation`` (read to its end)."""
    consumer = Consumer(
        stack.kafka_settings().client_config(
            group_id=f"a-{uuid.uuid4()}", auto_offset_reset="earliest", enable_partition_eof=True
        )
    )
    consumer.subscribe(["audit.decisions"])
    found: list[dict[str, Any]] = []
    with SchemaRegistryClient(stack.registry_config()) as client:
        decoder = Decoder(registry_lookup(client))
        deadline = time.monotonic() + 30
        at_end: set[int] = set()
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(1)
                if msg is None:
                    continue
                if msg.error() is not None:
                    at_end.add(msg.partition())
                    if len(at_end) == len(consumer.assignment()) > 0:
                        break
                    continue
                at_end.discard(msg.partition())
                _, record = decoder.decode(msg.value())
                if record["correlation_id"] == correlation:
                    found.append(record)
        finally:
            consumer.close()
    return found


def test_kafka_down_gives_503_and_every_202_is_in_kafka(gateway: Any) -> None:
    local = gateway.stack.local
    if local is None:
        pytest.skip("an external stack cannot be stopped by the tests")
    token = gateway.token()
    accepted: list[dict[str, Any]] = []
    statuses: list[int] = []
    local.kill_broker()
    try:
        for _ in range(3):
            response = post(gateway, event(event_id=str(uuid.uuid4())), token)
            statuses.append(response.status_code)
            if response.status_code == 202:
                accepted.append(response.json()["receipt"])
            else:
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "kafka_unavailable"
                assert int(response.headers["Retry-After"]) >= 1
    finally:
        local.restart_broker()
    assert 503 in statuses
    ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
    assert ready.status_code in (200, 503)
    # After recovery: new events are accepted again, and every 202 is readable from Kafka.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = post(gateway, event(), token)
        if response.status_code == 202:
            accepted.append(response.json()["receipt"])
            break
        time.sleep(1)
    assert accepted, "the gateway never recovered after the broker restart"
    for receipt in accepted:
        msg = fetch(gateway, receipt)
        assert receipt["event_id"].encode() in msg.value()


def test_publisher_client_round_trip(gateway: Any) -> None:
    from producers.client import SealstreamClient

    events = [event(payload={**PAYMENT, "payment_id": f"p-{i}"}) for i in range(120)]
    events.append(event(payload={"payment_id": "broken"}))
    with SealstreamClient(gateway.url, gateway.token(), batch_size=50) as client:
        first = client.publish(events)
        assert len(first.receipts) == 120 and len(first.rejected) == 1
        assert all(client.verify(r) for r in first.receipts)
        before = gateway.raw_mark()
        ids = [r["event_id"] for r in first.receipts]
        again = client.publish([{**e, "event_id": i} for e, i in zip(events, ids, strict=False)])
        assert [r["event_id"] for r in again.receipts] == ids
        assert again.receipts == first.receipts
        assert gateway.raw_events_since(before) == 0  # retries produced nothing


def test_gzip_and_zstd_bodies_are_accepted_and_a_bomb_is_413_producing_nothing(
    gateway: Any,
) -> None:
    import gzip

    import zstandard

    batch = {"events": [event(payload={**PAYMENT, "payment_id": f"z-{i}"}) for i in range(30)]}
    raw = json.dumps(batch).encode()
    for coding, body in (("gzip", gzip.compress(raw)), ("zstd", zstandard.compress(raw))):
        response = post(gateway, body, gateway.token(), **{"Content-Encoding": coding})
        assert response.status_code == 202, response.text
        assert len(response.json()["accepted"]) == 30

    before = gateway.raw_mark()
    limit = gateway.gateway.settings.max_body_bytes
    bomb = gzip.compress(b'{"events": [' + b" " * (limit * 4) + b"]}")
    assert len(bomb) < limit
    response = post(gateway, bomb, gateway.token(), **{"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "body_too_large"
    response = post(gateway, raw, gateway.token(), **{"Content-Encoding": "br"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_content_encoding"
    response = post(gateway, b"\x1f\x8b garbage", gateway.token(), **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_content_encoding"
    assert gateway.raw_events_since(before) == 0


@pytest.mark.parametrize("section", ["### Compressed bodies", "### CloudEvents"])
def test_the_examples_of_the_docs_run(gateway: Any, section: str) -> None:
    import re
    import subprocess

    text = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()
    section = text.split(section, 1)[1]
    script = re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M)[0]
    before = gateway.raw_mark()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**os.environ, "GATEWAY": gateway.url, "TOKEN": gateway.token()},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)  # a batch's receipts, or the one event's
    assert len(answer["accepted"]) == 1 if "accepted" in answer else "receipt" in answer
    assert gateway.raw_events_since(before) == 1


def test_cloudevents_in_every_http_mode_from_the_official_sdk(gateway: Any) -> None:
    """Structured, binary and batched CloudEvents made by the cloudevents SDK: accepted onto
    events.raw with the mapped envelope, a retry of the same CloudEvent answered with its first
    receipt, and every check applied with errors naming the CloudEvents attribute."""
    from cloudevents.core.bindings.http import to_binary, to_structured
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    login = {"user_id": "u1", "username": "ann", "success": True, "method": "SSO"}

    def cloud_event(ce_id: str, data: dict[str, Any] = login, **extra: Any) -> CloudEvent:
        attributes = {
            "type": "login",
            "source": "/idp/eu",
            "id": ce_id,
            "subject": "u1",
            "time": dt.datetime.now(dt.UTC),
            "datacontenttype": "application/json",
        }
        return CloudEvent({**attributes, **extra}, data)  # fmt: skip

    def send(message: Any, token: str | None = None) -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/v1/events", content=message.body, timeout=30,
            headers={**message.headers, "Authorization": f"Bearer {token or gateway.token()}"},
        )  # fmt: skip

    run = uuid.uuid4().hex[:8]
    structured = send(to_structured(cloud_event(f"s-{run}"), JSONFormat()))
    assert structured.status_code == 202, structured.text
    msg = fetch(gateway, structured.json()["receipt"])
    with SchemaRegistryClient(gateway.stack.registry_config()) as client:
        _, raw = Decoder(registry_lookup(client)).decode(msg.value())
    assert raw["event_id"] == str(uuid.uuid5(cloudevents.ID_NAMESPACE, f"/idp/eu\x00s-{run}"))
    assert (raw["event_type"], raw["tenant"], raw["source"]) == ("login", "acme", "/idp/eu")
    assert raw["payload"]["username"] == "ann"
    again = send(to_structured(cloud_event(f"s-{run}"), JSONFormat()))
    assert again.json()["receipt"] == structured.json()["receipt"]  # the same event, once

    binary = send(to_binary(cloud_event(f"b-{run}"), JSONFormat()))
    assert binary.status_code == 202, binary.text

    batch = [json.loads(to_structured(cloud_event(f"{i}-{run}"), JSONFormat()).body)
             for i in range(3)]  # fmt: skip
    batch[1]["data"] = {**login, "success": "yes"}  # the schema check applies unchanged
    batch[2]["tenant"] = "globex"  # so does authorization: not this token's tenant
    response = httpx.post(
        f"{gateway.url}/v1/events", content=json.dumps(batch), timeout=30,
        headers={"Content-Type": cloudevents.BATCH, "Authorization": f"Bearer {gateway.token()}"},
    )  # fmt: skip
    body = response.json()
    assert [a["index"] for a in body["accepted"]] == [0], body
    fields = {r["index"]: (r["status"], r["error"]["field"]) for r in body["rejected"]}
    assert fields == {1: (422, "[1].data.success"), 2: (403, "[2].tenant")}, body

    unknown = send(to_structured(cloud_event(f"u-{run}", type="com.example.order"), JSONFormat()))
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "type"


@pytest.mark.parametrize(
    ("sent", "continues"),
    [
        ({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, True),
        ({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
          "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"}, True),
        ({}, False),  # no trace context: a new trace
        ({"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, False),
        ({"traceparent": "garbage"}, False),
        ({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + "x" * 9000},
         False),
    ],
)  # fmt: skip
def test_the_events_of_a_request_carry_its_span_under_the_callers_trace(
    gateway: Any, sent: dict[str, str], continues: bool
) -> None:
    """Read with the SDK's in-memory exporter: the request's span is the child of the caller's
    traceparent (a new trace when there is none or it does not parse, never a refusal), and
    every event of the request carries that span's context on events.raw."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sealstream.tracing import Tracing, ids_of

    exporter = InMemorySpanExporter()
    before, gateway.gateway.tracing = gateway.gateway.tracing, Tracing("gateway", exporter)
    try:
        response = post(gateway, {"events": [event(), event()]}, gateway.token(), **sent)
        gateway.gateway.tracing.flush()
    finally:
        gateway.gateway.tracing, tracing = before, gateway.gateway.tracing
        tracing.shutdown()
    assert response.status_code == 202, response.text
    (span,) = exporter.get_finished_spans()
    assert span.name == "POST /v1/events" and span.attributes is not None
    assert span.attributes["http.response.status_code"] == 202
    assert span.attributes["sealstream.tenant"] == "acme"
    trace_id, span_id = f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"
    if continues:
        assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert span.parent is not None and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    else:
        assert trace_id != "4bf92f3577b34da6a3ce929d0e0e4736" and span.parent is None
    for accepted in response.json()["accepted"]:
        headers = dict(fetch(gateway, accepted["receipt"]).headers())
        assert ids_of(headers["traceparent"]) == (trace_id, span_id)
        assert headers.get("tracestate", b"").decode() == sent.get("tracestate", "")
