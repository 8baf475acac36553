"""Outbox and inbox: the tables that make "nothing lost, nothing twice" hold.

Services add ``OutboxMessage`` rows in the transaction of their change; the relay
publishes them. Consumers add an ``InboxMessage`` in the transaction of their effect;
a duplicate key means the message was already applied.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DDL, JSON, Index, Integer, String, Text, event
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
    # When the relay took the row; committed only once the broker confirmed it.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # A row the broker returned (unroutable) or nacked waits until then, so it never
    # blocks the rows behind it and is never marked sent.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Replays: the original bytes go to one queue (through the default exchange)
    # instead of a new envelope to the topic exchange.
    destination: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict | None] = mapped_column(JsonDocument)


# The relay's doorbell, rung by the database itself: any INSERT into the outbox, from
# any writer, sends NOTIFY at its commit (none on rollback), once per transaction
# however many rows it adds. Migration 0003 creates the same on PostgreSQL.
OUTBOX_CHANNEL = "carhub_outbox"
OUTBOX_NOTIFY_FUNCTION = DDL(
    "CREATE OR REPLACE FUNCTION carhub_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN PERFORM pg_notify('{OUTBOX_CHANNEL}', ''); RETURN NULL; END $$"
)
OUTBOX_NOTIFY_TRIGGER = DDL(
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION carhub_outbox_notify()"
)
for ddl in (OUTBOX_NOTIFY_FUNCTION, OUTBOX_NOTIFY_TRIGGER):
    event.listen(OutboxMessage.__table__, "after_create", ddl.execute_if(dialect="postgresql"))


class InboxMessage(db.Model):
    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)  # the queue name
    message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(128), nullable=False)
    processed_at: Mapped[datetime] = created_at_column()


class LocalDelivery(db.Model):
    """Embedded mode only: a message waiting on a queue, as RabbitMQ would hold it.

    The embedded relay turns each outbox row into one row per queue its routing key
    reaches; the embedded consumer deletes the row in the transaction that applies it,
    or pushes ``available_at`` back for a retry.
    """

    __tablename__ = "local_deliveries"
    __table_args__ = (Index("ix_local_deliveries_ready", "queue", "available_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(128), nullable=False)
    routing_key: Mapped[str] = mapped_column(String(128), nullable=False)
    message_id: Mapped[str | None] = mapped_column(String(128))
    content_type: Mapped[str | None] = mapped_column(String(128))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    available_at: Mapped[datetime] = created_at_column()
    created_at: Mapped[datetime] = created_at_column()


class DeadLetter(db.Model):
    """A message that can never be applied, or that failed too often, kept for replay.

    With RabbitMQ the worker copies what reaches ``carhub.dlx`` here (the broker queue
    ``carhub.dead-letters`` keeps its own copy for the management UI); embedded, the
    consumer writes it directly.
    """

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_newest", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    message_id: Mapped[str | None] = mapped_column(String(128))
    queue: Mapped[str | None] = mapped_column(String(128))
    routing_key: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    content_type: Mapped[str | None] = mapped_column(String(128))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text, nullable=False)
    headers: Mapped[dict | None] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = created_at_column()
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
