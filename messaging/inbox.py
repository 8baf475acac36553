"""Apply a message once: its effect and its inbox row commit together or not at all."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from extensions import db
from models.messaging import InboxMessage


def apply_once(consumer: str, message_id: str, message_type: str, work: Callable[[], None]) -> bool:
    """Run ``work`` and record ``(consumer, message_id)`` in one transaction.

    Returns False (and changes nothing) when the message was applied before. The inbox
    row is written first: a concurrent duplicate then waits on the primary key and
    fails, instead of both applying the effect. ``work`` must not commit.
    """
    try:
        db.session.add(InboxMessage(consumer=consumer, message_id=message_id, type=message_type))
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return False
    try:
        work()
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        if _is_inbox_duplicate(exc):
            return False
        raise
    except BaseException:
        db.session.rollback()
        raise
    return True


def _is_inbox_duplicate(exc: IntegrityError) -> bool:
    return "inbox" in str(exc.orig).lower()
