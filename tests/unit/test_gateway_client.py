"""The publisher client's retry rules, against a scripted HTTP transport (no gateway)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from producers import client as client_module
from producers.client import PublishError, SealstreamClient
from tests.patching import record_sleeps


def scripted(answers: list[Any], seen: list[dict[str, Any]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, payload, headers = answer(body) if callable(answer) else answer
        return httpx.Response(status, json=payload, headers=headers)

    return httpx.MockTransport(handler)


def ok(body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    accepted = [
        {"index": i, "event_id": e["event_id"], "receipt": {"event_id": e["event_id"]}}
        for i, e in enumerate(body["events"])
    ]
    return 202, {"accepted": accepted, "rejected": []}, {}


def test_retries_keep_event_ids_and_honour_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = record_sleeps(monkeypatch, client_module.time)
    seen: list[dict[str, Any]] = []
    answers = [
        httpx.ConnectError("refused"),
        (503, {"error": {"code": "kafka_unavailable"}}, {"Retry-After": "2"}),
        ok,
    ]
    with SealstreamClient("http://gw", "t", transport=scripted(answers, seen)) as client:
        result = client.publish([{"event_type": "x"}, {"event_type": "y"}])
    ids = [[e["event_id"] for e in body["events"]] for body in seen]
    assert ids[0] == ids[1] == ids[2] and len(set(ids[0])) == 2
    assert [r["event_id"] for r in result.receipts] == ids[0]
    assert result.attempts == 3 and sleeps[1] >= 2


def test_content_rejections_are_returned_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    record_sleeps(monkeypatch, client_module.time)
    seen: list[dict[str, Any]] = []

    def partial(body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        events = body["events"]
        return (
            202,
            {
                "accepted": [
                    {
                        "index": 0,
                        "event_id": events[0]["event_id"],
                        "receipt": {"event_id": events[0]["event_id"]},
                    }
                ],
                "rejected": [
                    {"index": 1, "status": 422, "error": {"code": "schema_mismatch"}},
                    {"index": 2, "status": 503, "error": {"code": "kafka_unavailable"}},
                ],
            },
            {},
        )

    with SealstreamClient("http://gw", "t", transport=scripted([partial, ok], seen)) as client:
        result = client.publish([{"n": 0}, {"n": 1}, {"n": 2}])
    assert len(seen) == 2 and [e["n"] for e in seen[1]["events"]] == [2]  # only the 503 one
    assert [r["error"]["code"] for r in result.rejected] == ["schema_mismatch"]
    assert len(result.receipts) == 2


def test_gives_up_after_max_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    record_sleeps(monkeypatch, client_module.time)
    answers = [(503, {"error": {}}, {})] * 3
    transport = scripted(answers, [])
    with (
        SealstreamClient("http://gw", "t", max_attempts=3, transport=transport) as client,
        pytest.raises(PublishError) as info,
    ):
        client.publish([{"n": 1}])
    assert info.value.status == 503


def test_batches_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    transport = scripted([ok, ok, ok], seen)
    with SealstreamClient("http://gw", "t", batch_size=2, transport=transport) as client:
        result = client.publish([{"n": i} for i in range(5)])
    assert [len(b["events"]) for b in seen] == [2, 2, 1] and len(result.receipts) == 5
