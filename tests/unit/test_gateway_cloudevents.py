"""CloudEvents 1.0 onto the gateway's envelope (producers/cloudevents.py), with messages made
by the official cloudevents SDK (structured and binary HTTP mode) and the spec's own example;
every mapping, every refusal with the attribute it names."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from producers import cloudevents as ce
from producers.errors import InvalidRequest, RequestTooLarge
from producers.validation import FieldError

NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
DATA = {"user_id": "u1", "username": "ann", "success": True, "method": "SSO"}


def sdk_event(**attributes: Any) -> CloudEvent:
    return CloudEvent(
        {"type": "login", "source": "/idp/eu", "id": "login-1", "time": NOW, **attributes}, DATA
    )


def test_structured_and_binary_mode_map_onto_the_envelope() -> None:
    for message in (to_structured(sdk_event(subject="u1"), JSONFormat()),
                    to_binary(sdk_event(subject="u1"), JSONFormat())):  # fmt: skip
        headers = {k.lower(): v for k, v in message.headers.items()}
        mode = ce.mode_of(headers.get("content-type", ""), headers)
        events, batch = ce.events_of(mode, json.loads(message.body), headers, "acme", 10)  # type: ignore[arg-type]
        assert not batch
        (event,) = events
        assert event == {
            "event_id": str(uuid.uuid5(ce.ID_NAMESPACE, "/idp/eu\x00login-1")),
            "event_type": "login",
            "tenant": "acme",  # the token's
            "source": "/idp/eu",
            "occurred_at": "2026-12-01T10:00:00Z",
            "key": "u1",
            "payload": DATA,
        }
    assert ce.mode_of("application/json", {}) is None
    assert ce.mode_of("application/cloudevents-batch+json; charset=utf-8", {}) == ce.BATCH


def test_the_specs_example_and_a_uuid_id_kept_as_it_is() -> None:
    # CloudEvents 1.0 spec, "Example" (JSON event format), with data a JSON object
    spec = {
        "specversion": "1.0", "type": "com.github.pull_request.opened",
        "source": "https://github.com/cloudevents/spec/pull", "subject": "123",
        "id": "A234-1234-1234", "time": "2018-04-05T17:31:00Z", "comexampleextension1": "value",
        "comexampleothervalue": 5, "datacontenttype": "text/xml", "data": "<much wow=\"xml\"/>",
    }  # fmt: skip
    refused = ce.envelope(spec, 0, "", "acme")
    assert isinstance(refused, FieldError) and refused.field == "datacontenttype"
    spec = {**spec, "datacontenttype": "application/json", "data": {"number": 123}}
    event = ce.envelope(spec, 0, "", "acme")
    assert isinstance(event, dict)
    assert event["event_type"] == "com.github.pull_request.opened"  # refused later: no schema
    assert "comexampleextension1" not in event  # extensions are not carried
    same = str(uuid.uuid4())
    assert ce.envelope({**spec, "id": same}, 0, "", "acme")["event_id"] == same  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"specversion": "0.3"}, "specversion", "unsupported_specversion"),
        ({"id": ""}, "id", "missing_field"),
        ({"source": None}, "source", "missing_field"),
        ({"type": 7}, "type", "missing_field"),
        ({"data_base64": "AAAA"}, "data_base64", "unsupported_data"),
        ({"datacontenttype": "text/plain"}, "datacontenttype", "unsupported_media_type"),
        ({"dataschema": 5}, "dataschema", "invalid_field"),
        ({"id": "a\x00b"}, "id", "invalid_field"),  # (a\0b, c) and (a, b\0c) were one id
        ({"source": "/idp\n/eu"}, "source", "invalid_field"),
        ({"type": "login\x1b[2J"}, "type", "invalid_field"),
    ],
)
def test_what_is_no_cloudevent_1_0_is_an_error_naming_the_attribute(
    change: dict[str, Any], field: str, code: str
) -> None:
    good = json.loads(to_structured(sdk_event(), JSONFormat()).body)
    error = ce.envelope({**good, **change}, 3, "[3]", "acme")
    assert isinstance(error, FieldError)
    assert (error.index, error.field, error.code) == (3, f"[3].{field}", code)


def test_only_a_canonical_uuid_is_kept_any_other_id_is_namespaced_by_its_source() -> None:
    """uuid.UUID reads 32 hex digits, braces, urn:uuid: and a leading '+' as a UUID too: an MD5
    id of one source and the same digits as a UUID of another were one event (the second a
    duplicate, never stored)."""
    good = json.loads(to_structured(sdk_event(), JSONFormat()).body)
    same = uuid.uuid4()

    def event_id(source: str, id_: str) -> str:
        return ce.envelope({**good, "source": source, "id": id_}, 0, "", "acme")["event_id"]  # type: ignore[index]

    assert event_id("/a", str(same)) == event_id("/b", str(same)) == str(same)
    assert event_id("/a", str(same).upper()) == str(same)  # canonical, in capitals
    for other in (same.hex, f"{{{same}}}", f"urn:uuid:{same}", f"+{str(same)[1:]}"):
        assert event_id("/a", other) != str(same), other
        assert event_id("/a", other) != event_id("/b", other), other
        assert event_id("/a", other) == str(uuid.uuid5(ce.ID_NAMESPACE, f"/a\x00{other}"))


def test_batches_and_their_limits() -> None:
    one = json.loads(to_structured(sdk_event(), JSONFormat()).body)
    events, batch = ce.events_of(ce.BATCH, [one, {**one, "id": "login-2"}, "x"], {}, "acme", 3)
    assert batch and len(events) == 3 and isinstance(events[2], FieldError)
    assert events[0]["event_id"] != events[1]["event_id"]
    with pytest.raises(RequestTooLarge):
        ce.events_of(ce.BATCH, [one] * 4, {}, "acme", 3)
    for body in ([], {"events": [one]}):
        with pytest.raises(InvalidRequest):
            ce.events_of(ce.BATCH, body, {}, "acme", 3)


def test_envelope_error_paths_become_attribute_paths() -> None:
    assert ce.attribute_path("payload.amount_minor") == "data.amount_minor"
    assert ce.attribute_path("events[2].occurred_at") == "[2].time"
    assert ce.attribute_path("events[0]") == "[0]"
    assert ce.attribute_path("event_type") == "type"
    assert ce.attribute_path("$") == "$"
