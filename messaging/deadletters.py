"""Dead letters for operators: list them, replay one (both modes, from the table).

A replay never publishes from the web process: it writes an outbox row carrying the
original bytes, addressed to the queue that failed (through the default exchange, so
the other subscribers of the routing key do not get it again), and the relay sends it
like any other row. The attempt count starts again from zero.
"""

from __future__ import annotations

from sqlalchemy import func, select

from extensions import db
from messaging.topology import ROUTING_KEY_HEADER
from models.base import utcnow
from models.messaging import DeadLetter, OutboxMessage


class DeadLetterNotFound(LookupError):
    pass


def list_dead_letters(page: int = 1, size: int = 50, queue: str | None = None) -> tuple[list[DeadLetter], int]:
    query = select(DeadLetter)
    if queue:
        query = query.where(DeadLetter.queue == queue)
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = list(
        db.session.scalars(
            query.order_by(DeadLetter.created_at.desc(), DeadLetter.id.desc()).offset((page - 1) * size).limit(size)
        )
    )
    return items, total


def replay(dead_letter_id: str) -> DeadLetter:
    """Queue the dead letter for its original queue again; the relay sends it."""
    letter = db.session.get(DeadLetter, dead_letter_id)
    if letter is None:
        raise DeadLetterNotFound(dead_letter_id)
    if not letter.queue:
        raise ValueError(f"dead letter {dead_letter_id} does not say which queue failed")
    db.session.add(
        OutboxMessage(
            type=letter.routing_key,
            source="carhub/replay",
            subject=letter.id,
            data={},
            correlation_id=letter.correlation_id,
            destination=letter.queue,
            payload=letter.body,
            headers={
                ROUTING_KEY_HEADER: letter.routing_key,
                "x-carhub-replay-of": letter.id,
                "properties": {"content_type": letter.content_type, "message_id": letter.message_id},
            },
        )
    )
    letter.replayed_at = utcnow()
    db.session.commit()
    return letter


def as_dict(letter: DeadLetter) -> dict:
    return {
        "id": letter.id,
        "message_id": letter.message_id,
        "queue": letter.queue,
        "routing_key": letter.routing_key,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "content_type": letter.content_type,
        "correlation_id": letter.correlation_id,
        "body": letter.body,
        "headers": letter.headers or {},
        "created_at": letter.created_at,
        "replayed_at": letter.replayed_at,
    }
