"""What the consumer does with each message: queue → routing key → service function.

This is the consumer's door into the service layer, as the HTTP views are the other.
The runtime in ``messaging/`` calls :func:`dispatch` inside the transaction that also
records the inbox row, and commits and acks after it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services import bonuses, fines, notifications, orders, payments, stock, tickets
from services.errors import InvalidMessage


@dataclass(frozen=True)
class Event:
    """A decoded inbound message, whatever form it arrived in."""

    id: str
    type: str
    data: Mapping[str, Any]
    source: str = "carhub"
    subject: str | None = None
    time: datetime | None = None
    correlation_id: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[Event], None]

# Every type a queue's bindings (messaging/topology.py) can carry needs a handler here;
# tests/test_topology.py checks that, so nothing a service emits is dead-lettered.
HANDLERS: dict[str, dict[str, Handler]] = {
    "carhub.stock": stock.HANDLERS,
    "carhub.bonus": bonuses.HANDLERS,
    "carhub.notifications": {
        **notifications.HANDLERS,
        **tickets.NOTIFICATIONS,
        **orders.NOTIFICATIONS,
        **payments.NOTIFICATIONS,
        **bonuses.NOTIFICATIONS,
        **stock.NOTIFICATIONS,
        **fines.NOTIFICATIONS,
    },
}


def dispatch(queue: str, event: Event) -> None:
    """Run the handler for ``event`` on ``queue``; an unknown type can never succeed."""
    handler = HANDLERS.get(queue, {}).get(event.type)
    if handler is None:
        raise InvalidMessage(f"unknown type {event.type!r} on {queue}")
    handler(event)
