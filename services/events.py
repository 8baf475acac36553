"""The one way a service publishes: an outbox row in the caller's transaction.

The row is committed with the change it describes or not at all, so an event exists
if and only if its transaction committed. The relay turns rows into CloudEvents.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from extensions import db
from models.messaging import OutboxMessage
from tracing import current_request_id

OUTBOX_CHANNEL = "carhub_outbox"


def record_event(
    type: str,  # noqa: A002 - the CloudEvents attribute name
    subject: str | None,
    data: dict[str, Any],
    *,
    source: str | None = None,
    event_id: str | None = None,
) -> OutboxMessage:
    """Add an event to the outbox of the current transaction (``data`` must be JSON-safe)."""
    message = OutboxMessage(
        type=type,
        subject=subject,
        data=jsonable(data),
        source=source or f"carhub/{type.split('.', 1)[0]}",
        correlation_id=current_request_id(),
    )
    if event_id:
        message.id = event_id
    db.session.add(message)
    db.session.info["outbox_written"] = True
    return message


def jsonable(value: Any) -> Any:
    """Decimals as strings (money keeps its two places), times as RFC 3339."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


@sa_event.listens_for(Session, "before_commit")
def _wake_relay_on_commit(session: Session) -> None:
    """On PostgreSQL, NOTIFY is delivered at commit (and dropped on rollback): the relay
    wakes within milliseconds instead of polling. It always re-reads the table. A
    savepoint waits for the real commit, so a batch of consumed messages rings once."""
    if session.in_nested_transaction() or not session.info.pop("outbox_written", False):
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(db.text(f"NOTIFY {OUTBOX_CHANNEL}"))


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_outbox_flag(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop("outbox_written", None)
