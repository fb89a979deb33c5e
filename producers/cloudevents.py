"""CloudEvents 1.0 at ``POST /v1/events``: the HTTP binding's structured mode
(``application/cloudevents+json``), batched mode (``application/cloudevents-batch+json``) and
binary mode (``ce-*`` headers, the body is the event's data), mapped onto the gateway's own
envelope so every check applies unchanged:

    id          -> event_id  (a UUID as is; any other id -> UUIDv5 of source and id, so a
                              retry of the same CloudEvent is the same event)
    type        -> event_type (an event type the catalog knows, e.g. ``payment``)
    source      -> source
    time        -> occurred_at (required here: the pipeline orders and partitions by it)
    subject     -> key        (the ordering key, an entity id)
    data        -> payload    (a JSON object; ``data_base64`` is refused)
    tenant      -> tenant     (the extension attribute if given, else the token's tenant)

``dataschema`` must be a string when given (the schema is the catalog's for the type);
``specversion`` must be ``1.0``; other extension attributes are accepted and not carried.
Errors name the CloudEvents attribute (``data.amount``, ``[2].time``), not the envelope field.

Hand-written rather than the cloudevents SDK's ``from_http``: the SDK raises one exception per
request, where each event of a batch must get its own field error, and it would parse the
body a second time; the tests use the official SDK as the client.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from producers.errors import InvalidRequest, RequestTooLarge
from producers.validation import FieldError, control_character

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BINARY = "binary"
# the namespace of the UUIDv5 event ids made from a CloudEvent's (source, id)
ID_NAMESPACE = uuid.UUID("5ea15ea1-c10d-4e7e-9b1a-000000000001")
ATTRIBUTE_OF = {
    "event_id": "id", "event_type": "type", "occurred_at": "time", "source": "source",
    "key": "subject", "payload": "data", "tenant": "tenant",
}  # fmt: skip
_JSON_MEDIA = re.compile(r"^(application/json|[^/]+/[^;]*\+json)(;.*)?$", re.I)


def mode_of(content_type: str, headers: Mapping[str, str]) -> str | None:
    """STRUCTURED, BATCH, BINARY (a ``ce-specversion`` header), or None for the gateway's own
    envelope."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in (STRUCTURED, BATCH):
        return media
    return BINARY if "ce-specversion" in headers else None


def events_of(
    mode: str, body: Any, headers: Mapping[str, str], tenant: str, max_events: int
) -> tuple[list[Any], bool]:
    """The request's events as envelopes (or a FieldError for one that is no CloudEvent), and
    whether it was a batch."""
    if mode == BATCH:
        if not isinstance(body, list) or not body:
            raise InvalidRequest(
                "a CloudEvents batch is a non-empty JSON array of events", "invalid_batch"
            )
        if len(body) > max_events:
            raise RequestTooLarge(
                f"batch has {len(body)} events; the limit is {max_events}", code="batch_too_large"
            )
        return [
            envelope(event, index, f"[{index}]", tenant) for index, event in enumerate(body)
        ], True
    if mode == BINARY:
        attributes: dict[str, Any] = {
            name[3:]: unquote(value) for name, value in headers.items() if name.startswith("ce-")
        }
        attributes.pop("data", None)  # a ce-data header is no way to send data
        attributes["data"] = body
        return [envelope(attributes, 0, "", tenant)], False
    return [envelope(body, 0, "", tenant)], False


def envelope(event: Any, index: int, prefix: str, tenant: str) -> dict[str, Any] | FieldError:
    """One CloudEvent as the gateway's envelope; a FieldError when it is no CloudEvent 1.0."""

    def error(attribute: str, code: str, message: str) -> FieldError:
        return FieldError(index, f"{prefix}.{attribute}" if prefix else attribute, code, message)

    if not isinstance(event, dict):
        return FieldError(index, prefix or "$", "invalid_event", "each CloudEvent is an object")
    if event.get("specversion") != "1.0":
        return error(
            "specversion", "unsupported_specversion",
            f"specversion must be '1.0' (CloudEvents 1.0), not {event.get('specversion')!r}",
        )  # fmt: skip
    for name in ("id", "source", "type"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            return error(name, "missing_field", f"the CloudEvents attribute {name!r} is required")
        why = control_character(value)
        if why is not None:  # and so no two (source, id) pairs name one event
            return error(name, "invalid_field", f"the CloudEvents attribute {name!r} {why}")
    if "data_base64" in event:
        return error("data_base64", "unsupported_data", "send data as a JSON object, not base64")
    media = event.get("datacontenttype")
    if media is not None and not (isinstance(media, str) and _JSON_MEDIA.match(media)):
        return error(
            "datacontenttype", "unsupported_media_type",
            f"data must be JSON (datacontenttype application/json), not {media!r}",
        )  # fmt: skip
    if "dataschema" in event and not isinstance(event["dataschema"], str):
        return error("dataschema", "invalid_field", "dataschema is a URI, as a string")
    out: dict[str, Any] = {
        "event_id": _event_id(event["source"], event["id"]),
        "event_type": event["type"],
        "tenant": event.get("tenant", tenant),
        "source": event["source"],
    }
    for attribute, field in (("time", "occurred_at"), ("subject", "key"), ("data", "payload")):
        if attribute in event:
            out[field] = event[attribute]
    return out


# Only a UUID in its canonical text is taken as it is: uuid.UUID also reads 32 hex digits,
# braces, "urn:uuid:" and a leading "+", so an MD5 hex id of one source and a UUID of another
# were one event, and the second was answered as a duplicate and never stored.
_CANONICAL_UUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def _event_id(source: str, event_id: str) -> str:
    """The envelope's event id: a canonical UUID as it is, any other id the UUIDv5 of its
    source and itself (neither holds the NUL between them: control characters are refused)."""
    if _CANONICAL_UUID.match(event_id):
        return str(uuid.UUID(event_id))
    return str(uuid.uuid5(ID_NAMESPACE, f"{source}\x00{event_id}"))


def attribute_path(field: str) -> str:
    """An envelope field path as the CloudEvents attribute path: ``events[2].payload.x`` ->
    ``[2].data.x``, ``occurred_at`` -> ``time``."""
    head, dot, rest = field.partition(".")
    if head.startswith("events["):
        index, _, rest = field.removeprefix("events").partition(".")
        return f"{index}.{attribute_path(rest)}" if rest else index
    return f"{ATTRIBUTE_OF.get(head, head)}{dot}{rest}"


def as_attributes(error: FieldError) -> FieldError:
    return replace(error, field=attribute_path(error.field))
