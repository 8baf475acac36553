"""CloudEvents out, tolerant decoding in.

Outbound: an outbox row becomes a structured-mode CloudEvent plus the AMQP properties
EVENTS.md lists, so the management UI shows what a message is at a glance.

Inbound: whatever arrives (a carhub envelope, a foreign CloudEvent such as a warehouse
movement, or a bare JSON command) becomes one :class:`Message`. The handler table is
keyed by routing key, so the type dispatched is the routing key, not the CloudEvent
``type`` (a warehouse sends ``ru.retail.warehouses.movement`` on
``stock.movement.departure``). A message that cannot be decoded raises ``ValueError``
(or ``TypeError``): it can never succeed and is dead-lettered at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika

from models.messaging import OutboxMessage

CLOUDEVENTS_JSON = "application/cloudevents+json"
APP_ID = "carhub"
_CLOUDEVENT_CORE = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "data"}


@dataclass(frozen=True)
class Outgoing:
    """What the relay publishes for one outbox row."""

    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def envelope(row: OutboxMessage) -> dict[str, Any]:
    """The CloudEvent for an outbox row."""
    return {
        "specversion": "1.0",
        "id": row.id,
        "source": row.source,
        "type": row.type,
        "time": _rfc3339(row.created_at),
        "subject": row.subject,
        "datacontenttype": "application/json",
        "data": row.data,
    }


def outgoing(row: OutboxMessage, events_exchange: str) -> Outgoing:
    """The message for ``row``: a new envelope on the topic exchange, or a replay's
    original bytes sent to one queue through the default exchange."""
    headers = dict(row.headers or {})
    original = headers.pop("properties", {}) or {}
    if row.payload is not None:
        body = row.payload.encode()
        content_type = original.get("content_type") or "application/json"
        message_id = original.get("message_id") or row.id
    else:
        body = json.dumps(envelope(row), separators=(",", ":")).encode()
        content_type = CLOUDEVENTS_JSON
        message_id = row.id
    properties = pika.BasicProperties(
        content_type=content_type,
        message_id=message_id,
        type=row.type,
        timestamp=int(row.created_at.timestamp()),
        app_id=APP_ID,
        delivery_mode=pika.DeliveryMode.Persistent,
        correlation_id=row.correlation_id,
        headers=headers or None,
    )
    if row.destination:
        return Outgoing("", row.destination, body, properties)
    return Outgoing(events_exchange, row.type, body, properties)


def body_text(row: OutboxMessage) -> str:
    """The body an embedded delivery of ``row`` carries (same bytes as on the wire)."""
    if row.payload is not None:
        return row.payload
    return json.dumps(envelope(row), separators=(",", ":"))


@dataclass(frozen=True)
class Message:
    """A decoded inbound message (consumer.py turns it into ``services.handlers.Event``)."""

    id: str
    type: str
    data: Mapping[str, Any]
    source: str = "carhub"
    subject: str | None = None
    time: datetime | None = None
    correlation_id: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)


def parse_time(value: Any) -> datetime | None:
    """CloudEvent ``time``: epoch milliseconds (warehouses) or RFC 3339."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TypeError("time must be a number or a string")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TypeError(f"time must be a number or a string, not {type(value).__name__}")


def decode(
    routing_key: str,
    body: bytes,
    message_id: str | None = None,
    correlation_id: str | None = None,
) -> Message:
    """Decode one delivery; raises ``ValueError``/``TypeError`` for what can never be applied."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"a message must be a JSON object, not {type(document).__name__}")
    if "specversion" in document:
        return _cloudevent(routing_key, document, correlation_id)
    identity = message_id or document.get("command_id")
    if not identity:
        # No id anywhere: two identical bare commands are one command. A producer that
        # means them twice must give them ids (message_id or command_id).
        identity = "sha256:" + hashlib.sha256(routing_key.encode() + b"\n" + body).hexdigest()
    return Message(
        id=str(identity),
        type=routing_key,
        data=document,
        source="external",
        correlation_id=correlation_id,
    )


def _cloudevent(routing_key: str, document: dict[str, Any], correlation_id: str | None) -> Message:
    identity = document.get("id")
    if not isinstance(identity, str | int) or identity == "":
        raise ValueError("a CloudEvent needs an id")
    data = document.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"CloudEvent data must be a JSON object, not {type(data).__name__}")
    subject = document.get("subject")
    extensions = {key: value for key, value in document.items() if key not in _CLOUDEVENT_CORE}
    if "type" in document:
        extensions.setdefault("cloudevent_type", document["type"])
    return Message(
        id=str(identity),
        type=routing_key,
        data=data,
        source=str(document.get("source") or "external"),
        subject=None if subject is None else str(subject),
        time=parse_time(document.get("time")),
        correlation_id=correlation_id or document.get("correlationid"),
        extensions=extensions,
    )
