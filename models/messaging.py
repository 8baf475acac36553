"""Outbox and inbox: the tables that make "nothing lost, nothing twice" hold.

Services add ``OutboxMessage`` rows in the transaction of their change; the relay
publishes them. Consumers add an ``InboxMessage`` in the transaction of their effect;
a duplicate key means the message was already applied.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import UTCDateTime, created_at_column, new_id

JsonDocument = JSON().with_variant(JSONB(), "postgresql")


class OutboxMessage(db.Model):
    __tablename__ = "outbox"
    __table_args__ = (
        # The relay's only query: unsent rows, oldest first. Partial, so it stays small.
        Index(
            "ix_outbox_unsent",
            "created_at",
            postgresql_where=db.text("published_at IS NULL"),
            sqlite_where=db.text("published_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)  # the event id
    type: Mapped[str] = mapped_column(String(128), nullable=False)  # also the routing key
    source: Mapped[str] = mapped_column(String(128), nullable=False)
    subject: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[dict] = mapped_column(JsonDocument, nullable=False)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class InboxMessage(db.Model):
    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)  # the queue name
    message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(128), nullable=False)
    processed_at: Mapped[datetime] = created_at_column()
