"""Gateway validation: body limits, envelope errors with paths, payloads against Avro."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import fastavro
import orjson
import pytest

from producers.errors import InvalidRequest, RequestTooLarge
from producers.validation import (
    EventIn,
    FieldError,
    TimeWindow,
    check_envelope,
    check_payload,
    parse_body,
    split_events,
)

PAYMENT: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "namespace": "t",
    "fields": [
        {"name": "account_id", "type": "string"},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {
            "name": "currency",
            "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD"]},
        },
        {"name": "paid_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}
PARSED = fastavro.parse_schema(PAYMENT)
GOOD = {
    "account_id": "acc-1",
    "amount": "12.50",
    "currency": "EUR",
    "paid_at": "2026-11-22T10:00:00Z",
}


def envelope(**overrides: Any) -> dict[str, Any]:
    base = {
        "event_type": "payment",
        "tenant": "acme",
        "occurred_at": "2026-11-22T10:00:00Z",
        "payload": GOOD,
    }
    base.update(overrides)
    return base


def test_body_limits() -> None:
    with pytest.raises(RequestTooLarge) as big:
        parse_body(b"{}" + b" " * 2000, max_bytes=1024, max_depth=8)
    assert big.value.status == 413
    with pytest.raises(InvalidRequest) as bad:
        parse_body(b'{"a": ', max_bytes=1024, max_depth=8)
    assert bad.value.code == "json_malformed" and bad.value.status == 400
    deep = b"[" * 20 + b"]" * 20
    with pytest.raises(InvalidRequest) as nested:
        parse_body(deep, max_bytes=1024, max_depth=8)
    assert nested.value.code == "json_too_deep"
    very_deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    with pytest.raises(InvalidRequest) as hostile:
        parse_body(very_deep, max_bytes=10**6, max_depth=32)
    assert hostile.value.code == "json_too_deep"
    assert parse_body(b'{"a": [1, {"b": 2}]}', max_bytes=1024, max_depth=8) == {"a": [1, {"b": 2}]}


def test_split_events() -> None:
    assert split_events({"event_type": "x"}, 10) == ([{"event_type": "x"}], False)
    assert split_events({"events": [{}, {}]}, 10) == ([{}, {}], True)
    with pytest.raises(RequestTooLarge) as many:
        split_events({"events": [{}] * 11}, 10)
    assert many.value.code == "batch_too_large"
    with pytest.raises(InvalidRequest):
        split_events({"events": []}, 10)
    with pytest.raises(InvalidRequest) as extra:
        split_events({"events": [{}], "more": 1}, 10)
    assert extra.value.field == "more"
    with pytest.raises(InvalidRequest):
        split_events([1, 2], 10)


@pytest.mark.parametrize(
    ("raw", "field", "code"),
    [
        (envelope(colour="red"), "events[3].colour", "unknown_field"),
        (
            {k: v for k, v in envelope().items() if k != "tenant"},
            "events[3].tenant",
            "missing_field",
        ),
        (envelope(tenant="Acme Corp"), "events[3].tenant", "invalid_field"),
        (envelope(occurred_at="2026-11-22T10:00:00"), "events[3].occurred_at", "invalid_timestamp"),
        (envelope(event_id="not-a-uuid"), "events[3].event_id", "invalid_field"),
        (envelope(payload=[1]), "events[3].payload", "invalid_field"),
        ("text", "events[3]", "invalid_event"),
    ],
)
def test_envelope_errors_have_paths(raw: Any, field: str, code: str) -> None:
    result = check_envelope(raw, 3, "events[3]")
    assert isinstance(result, FieldError)
    assert (result.index, result.field, result.code) == (3, field, code)
    assert result.message


@pytest.mark.parametrize(
    ("field", "value", "found"),
    [
        ("key", "k\r\ninjected: 1", "U+000D at position 1"),  # the entity_key header
        ("source", "\nsrc\x1b[31m", "U+000A at position 0"),
        ("correlation_id", "c-1\x00", "U+0000 at position 3"),  # the correlation_id header
        ("source", "caf\u00e9\x85", "U+0085 at position 4"),  # C1 too; letters are fine
    ],
)
def test_identifiers_with_control_characters_are_refused(
    field: str, value: str, found: str
) -> None:
    result = check_envelope(envelope(**{field: value}), 3, "events[3]")
    assert isinstance(result, FieldError)
    assert (result.field, result.code) == (f"events[3].{field}", "invalid_field")
    assert result.message == f"must not contain control characters: {found}"
    assert isinstance(check_envelope(envelope(**{field: "café/ü-1"}), 0, ""), EventIn)


def test_envelope_ok() -> None:
    event = check_envelope(envelope(event_id="0193a0b2-0000-7000-8000-000000000001"), 0, "")
    assert isinstance(event, EventIn) and event.tenant == "acme"


def test_payload_converts_json_to_avro() -> None:
    datum = check_payload(dict(GOOD), PAYMENT, PARSED, 0, "")
    assert isinstance(datum, dict)
    assert datum["amount"] == decimal.Decimal("12.50")
    assert datum["paid_at"] == dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**GOOD, "amount": "12.505"}, "events[1].payload.amount"),
        ({**GOOD, "amount": "twelve"}, "events[1].payload.amount"),
        ({**GOOD, "currency": "GBP"}, "events[1].payload.currency"),
        ({**GOOD, "paid_at": "yesterday"}, "events[1].payload.paid_at"),
        ({**GOOD, "paid_at": "2026-11-22T10:00:00"}, "events[1].payload.paid_at"),
        ({k: v for k, v in GOOD.items() if k != "account_id"}, "events[1].payload.account_id"),
        ({**GOOD, "account_id": 7}, "events[1].payload.account_id"),
        ({**GOOD, "tags": ["a", 1]}, "events[1].payload.tags[1]"),
        ({**GOOD, "amount": 12.5}, "events[1].payload.amount"),
        ({**GOOD, "paid_at": True}, "events[1].payload.paid_at"),
        ({**GOOD, "extra": 1}, "events[1].payload.extra"),
        ({**GOOD, "note": 5}, "events[1].payload.note"),
    ],
)
def test_payload_errors_name_the_field(payload: dict[str, Any], field: str) -> None:
    result = check_payload(payload, PAYMENT, PARSED, 1, "events[1]")
    assert isinstance(result, FieldError), result
    assert result.field == field and result.code == "schema_mismatch"


def test_valid_payload_encodes() -> None:
    datum = check_payload({**GOOD, "note": "hi", "tags": ["x"]}, PAYMENT, PARSED, 0, "")
    assert isinstance(datum, dict)
    import io

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, PARSED, datum)
    assert fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), PARSED)["note"] == "hi"
    assert orjson.dumps(GOOD)


NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
WINDOW = TimeWindow(dt.timedelta(days=30), dt.timedelta(hours=1))


@pytest.mark.parametrize(
    ("occurred_at", "code"),
    [
        (1764590400, "invalid_timestamp"),  # a Unix time: pydantic would take it
        (1764590400.5, "invalid_timestamp"),
        ("1764590400", "invalid_timestamp"),  # a numeric string, too
        ("2026-12-01", "invalid_timestamp"),
        ("2026-12-01T12:00:00", "invalid_timestamp"),  # no offset
        (None, "invalid_timestamp"),
        (True, "invalid_timestamp"),
        ("9999-12-31T23:59:59-01:00", "occurred_at_out_of_range"),  # was a 500 (OverflowError)
        ("0001-01-01T00:00:00+01:00", "occurred_at_out_of_range"),
        ("2026-12-01T13:00:01Z", "occurred_at_out_of_range"),
        ("2026-10-31T11:59:59Z", "occurred_at_out_of_range"),
        ("2026-12-01T14:00:00+02:00", "invalid_timestamp_ok"),  # 12:00 UTC: inside
        ("2026-11-01T12:00:01Z", "invalid_timestamp_ok"),  # 30 days minus a second
    ],
)
def test_occurred_at_is_an_rfc3339_time_inside_the_window(occurred_at: Any, code: str) -> None:
    result = check_envelope(envelope(occurred_at=occurred_at), 0, "", WINDOW, NOW)
    if code.endswith("_ok"):
        assert isinstance(result, EventIn)
        return
    assert isinstance(result, FieldError)
    assert (result.field, result.code) == ("occurred_at", code)
    assert "Value error" not in result.message


def test_a_payload_timestamp_that_has_no_utc_time_is_refused_not_a_crash() -> None:
    payload = {**GOOD, "paid_at": "9999-12-31T23:59:59-01:00"}
    result = check_payload(payload, PAYMENT, PARSED, 0, "")
    assert isinstance(result, FieldError) and result.field == "payload.paid_at"
    assert result.code == "schema_mismatch" and "UTC" in result.message


@pytest.mark.parametrize("open_, close", [(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")])
def test_the_depth_limit_is_exact(open_: bytes, close: bytes) -> None:
    """Containers nested exactly to the limit pass; one more level, even empty, is refused
    (the top level is depth 1; leaves do not count)."""
    per = open_.count(b"[") + open_.count(b"{")

    def nested(levels: int, inner: bytes) -> bytes:
        return open_ * levels + inner + close * levels

    limit = 6 * per
    assert parse_body(nested(6, b"1"), max_bytes=4096, max_depth=limit) is not None
    for inner in (b"[]", b"{}"):
        with pytest.raises(InvalidRequest) as deep:
            parse_body(nested(6, inner), max_bytes=4096, max_depth=limit)
        assert deep.value.code == "json_too_deep"
    assert parse_body(b'"just a string"', max_bytes=4096, max_depth=1) == "just a string"
