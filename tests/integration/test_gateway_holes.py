"""The gateway's holes an attack run found, against the real broker: one event id, one record
and one receipt (in a batch, across requests, concurrently); events the pipeline could not
carry refused up front with a 4xx; bodies that are not JSON or too large refused without
reading them; labels from request bodies never become metric series; hostile tokens and
timestamps a 4xx, never a 500."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_gateway import PAYMENT, event, fetch, post

pytestmark = pytest.mark.integration


def test_an_event_id_twice_in_one_batch_is_refused_for_the_second(gateway: Any) -> None:
    event_id = str(uuid.uuid4())
    before = gateway.raw_mark()
    batch = {
        "events": [
            event(event_id=event_id, key="entity-1"),
            event(),
            event(event_id=event_id, key="entity-2"),  # same id, another key and partition
        ]
    }
    response = post(gateway, batch, gateway.token())
    assert response.status_code == 202, response.text
    body = response.json()
    assert [a["index"] for a in body["accepted"]] == [0, 1]
    (refused,) = body["rejected"]
    assert (refused["index"], refused["status"]) == (2, 409)
    assert refused["error"]["code"] == "duplicate_event_id"
    assert refused["error"]["field"] == "events[2].event_id"
    assert "events[0]" in refused["error"]["message"]
    assert gateway.raw_events_since(before) == 2


def test_a_known_event_id_with_other_content_is_a_conflict_not_a_retry(gateway: Any) -> None:
    event_id = str(uuid.uuid4())
    first = post(gateway, event(event_id=event_id), gateway.token())
    assert first.status_code == 202
    before = gateway.raw_mark()
    other = post(
        gateway, event(event_id=event_id, payload={**PAYMENT, "amount_minor": 1}), gateway.token()
    )
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["code"] == "event_id_conflict" and error["field"] == "event_id"
    assert error["receipt"] == first.json()["receipt"]  # which event holds the id
    login = event(event_type="login", event_id=event_id, payload={
        "user_id": "u1", "username": "ann", "success": True, "method": "SSO"})  # fmt: skip
    assert post(gateway, login, gateway.token()).status_code == 409  # another type
    again = post(gateway, event(event_id=event_id, key="another-key"), gateway.token())
    assert again.status_code == 202 and again.json()["duplicate"] is True  # a real retry
    assert gateway.raw_events_since(before) == 0


def test_concurrent_requests_for_one_event_make_one_record_and_one_receipt(
    gateway: Any,
) -> None:
    event_id = str(uuid.uuid4())
    token = gateway.token()
    before = gateway.raw_mark()

    async def main() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/events",
                        content=json.dumps(event(event_id=event_id, key=f"k{i}")),
                        headers=headers,
                    )
                    for i in range(16)
                )
            )

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [202] * 16
    receipts = {json.dumps(r.json()["receipt"], sort_keys=True) for r in responses}
    assert len(receipts) == 1
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    assert gateway.raw_events_since(before) == 1
    # the partition follows (tenant, event_id), so every copy would meet one chain
    msg = fetch(gateway, responses[0].json()["receipt"])
    assert msg.key() == f"acme/{event_id}".encode()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", json.dumps(event()).encode()),
        ("application/x-www-form-urlencoded", b"event_type=payment&tenant=acme"),
        ("multipart/form-data; boundary=x", b"--x\r\n\r\n{}\r\n--x--"),
        ("", json.dumps(event()).encode()),
        ("application/jsonx", json.dumps(event()).encode()),
    ],
)
def test_a_body_that_is_not_declared_json_is_415(
    gateway: Any, content_type: str, body: bytes
) -> None:
    before = gateway.raw_mark()
    response = post(gateway, body, gateway.token(), **{"Content-Type": content_type})
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert gateway.raw_events_since(before) == 0


def test_json_with_a_charset_is_json(gateway: Any) -> None:
    response = post(
        gateway, event(), gateway.token(), **{"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert response.status_code == 202, response.text


def test_a_chunked_body_over_the_limit_is_refused_before_it_ends(gateway: Any) -> None:
    """The body never ends: a server that read it to the end before answering would never
    answer. The limit is the gateway's 1 MiB."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + gateway.token().encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        for _ in range(17):  # 1.06 MiB, and no terminating chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            assert data, "connection closed without an answer"
            answer += data
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"body_too_large" in rest or b"body_too_large" in answer


def test_an_event_the_pipeline_could_not_carry_is_413_and_a_permanent_error_is_not_503(
    gateway: Any,
) -> None:
    limits = gateway.gateway.service.limits
    before = gateway.raw_mark()
    near = limits.max_payload_bytes - 1000  # fits: accepted
    fits = post(gateway, event(payload={**PAYMENT, "merchant_id": "m" * near}), gateway.token())
    assert fits.status_code == 202, fits.text[:500]
    for size in (limits.max_payload_bytes + 1000, 900_000, 1_000_000):  # the attack's sizes
        body = event(payload={**PAYMENT, "merchant_id": "m" * size})
        raw = json.dumps(body).encode()
        response = post(gateway, raw, gateway.token())
        if len(raw) > 1024 * 1024:
            assert response.json()["error"]["code"] == "body_too_large"
            continue
        assert response.status_code == 413, response.text[:500]
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("event_too_large", "payload")
        assert "Retry-After" not in response.headers
    assert gateway.raw_events_since(before) == 1


def _metric_tenants(gateway: Any) -> set[str]:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return {
        sample.labels["tenant"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "tenant" in sample.labels
    }


def test_labels_come_from_authenticated_or_configured_tenants_only(gateway: Any) -> None:
    made_up = [f"zz{uuid.uuid4().hex[:10]}" for _ in range(5)]
    batch = {
        "events": [event(tenant=t) for t in made_up]  # not the token's, not configured: 403
        + [event(tenant=t, event_type="no_such_type") for t in made_up]  # 422
        + [{**event(), "tenant": t, "occurred_at": "yesterday"} for t in made_up]
    }
    response = post(gateway, batch, gateway.token())
    assert response.status_code in (403, 422), response.text
    seen = _metric_tenants(gateway)
    assert not seen & set(made_up), seen & set(made_up)
    assert "unknown" in seen


def _signed(gateway: Any, claims: dict[str, Any]) -> str:
    keyring = gateway.keyring
    key = keyring.get(keyring.active_hs256)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "HS256", "kid": key.kid, "typ": "JWT"}
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key.key, head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(signature)}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_signed_token_with_a_nan_or_infinite_exp_is_401_and_counted(
    gateway: Any, bad: float
) -> None:
    import time

    auth = gateway.auth
    now = int(time.time())
    claims = {
        "iss": auth.issuer, "aud": auth.audience, "sub": "svc-nan", "tenant": "acme",
        "scope": "events:write", "iat": now, "exp": bad,
    }  # fmt: skip

    def failures() -> float:
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "sealstream_gateway_auth_failures_total"
            and s.labels.get("reason") == "token_invalid"
        )

    counted = failures()
    response = post(gateway, event(), _signed(gateway, claims))
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "token_invalid"
    assert failures() == counted + 1


@pytest.mark.parametrize(
    ("occurred_at", "code"),
    [
        ("9999-12-31T23:59:59-01:00", "occurred_at_out_of_range"),  # was a 500
        ("2001-01-01T00:00:00Z", "occurred_at_out_of_range"),
        (1764590400, "invalid_timestamp"),
        ("1764590400", "invalid_timestamp"),
    ],
)
def test_occurred_at_outside_the_window_or_not_a_timestamp_is_422(
    gateway: Any, occurred_at: Any, code: str
) -> None:
    before = gateway.raw_mark()
    response = post(gateway, event(occurred_at=occurred_at), gateway.token())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == "occurred_at"
    assert gateway.raw_events_since(before) == 0
