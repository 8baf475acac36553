"""Deliver events in-process, the way the consumer does, without a broker.

``deliver`` applies one event on one queue through the same inbox unit of work and
handler table as the real consumer; ``drain_outbox`` delivers every unsent outbox row
to every queue its routing key reaches (as the topic exchange would), repeatedly, so
chains (payment → bonus → notification) run to the end.
"""

from __future__ import annotations

from sqlalchemy import select

from extensions import db
from messaging.inbox import apply_once
from messaging.topology import queues_for
from models.base import utcnow
from models.messaging import OutboxMessage
from services.handlers import Event, dispatch


def deliver(queue: str, event: Event) -> bool:
    """Apply ``event`` on ``queue`` once; False if it had been applied already."""
    return apply_once(queue, event.id, event.type, lambda: dispatch(queue, event))


def event_from_outbox(row: OutboxMessage) -> Event:
    return Event(
        id=row.id,
        type=row.type,
        data=row.data,
        source=row.source,
        subject=row.subject,
        time=row.created_at,
        correlation_id=row.correlation_id,
    )


def drain_outbox(max_rounds: int = 10) -> list[Event]:
    """Deliver all unsent outbox rows (and the events they cause); returns what was delivered."""
    delivered: list[Event] = []
    for _ in range(max_rounds):
        rows = list(db.session.scalars(select(OutboxMessage).where(OutboxMessage.published_at.is_(None))))
        if not rows:
            return delivered
        events = [event_from_outbox(row) for row in rows]
        for row in rows:
            row.published_at = utcnow()
        db.session.commit()
        for event in events:
            for queue in queues_for(event.type):
                deliver(queue, event)
            delivered.append(event)
    raise AssertionError("the outbox did not drain: an event loop?")
