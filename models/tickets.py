"""The support desk: tickets, their messages, and the per-filter counters that make totals cheap.

Lists are read far more often than tickets are written, and they must stay fast at a
million rows. So:

* the creator's full name is stored on the ticket (``user_name``) and the ``user_name``
  filter is an equality on an index, not a join to ``users``;
* every list shape has an index that matches its filter *and* its order
  ``(created_at DESC, id DESC)`` (a B-tree is read backwards just as well, so the
  columns are declared ascending and the same index also serves the reversed scan that
  makes pages near the end cheap);
* the indexes hold ``id``, so a page's ids come from an index-only scan and only the
  page's own rows are fetched (deferred join);
* ``ticket_counts`` keeps the number of tickets per (user_name, status) and for all
  names (``user_name = ''``), updated in the transaction that changes a ticket, so
  ``total`` is a read of at most four rows instead of a count over the index.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import created_at_column, updated_at_column, uuid_pk

TICKET_STATUSES = ("open", "in_progress", "resolved", "closed")
ALL_NAMES = ""  # the ticket_counts row that counts every name


class Ticket(db.Model):
    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'in_progress', 'resolved', 'closed')", name="status_known"),
        CheckConstraint("user_name <> ''", name="user_name_not_empty"),
        # One index per list shape, each matching filter + order, each ending in id.
        Index("ix_tickets_newest", "created_at", "id"),  # staff, no filter
        Index("ix_tickets_user_name_newest", "user_name", "created_at", "id"),
        Index("ix_tickets_user_name_status_newest", "user_name", "status", "created_at", "id"),
        Index("ix_tickets_status_newest", "status", "created_at", "id"),
        Index("ix_tickets_user_newest", "user_id", "created_at", "id"),  # a customer's own list
        Index("ix_tickets_assignee", "assignee_id"),
    )

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    # The creator's full name when the ticket was opened (denormalised for the filter).
    user_name: Mapped[str] = mapped_column(String(200), nullable=False)
    car_id: Mapped[str | None] = mapped_column(ForeignKey("cars.id", ondelete="SET NULL"))
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    assignee_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    # Optimistic locking: two concurrent status changes cannot both win (the UPDATE
    # carries "WHERE version = :seen"); the version is also the ETag.
    __mapper_args__ = {"version_id_col": version}


class TicketMessage(db.Model):
    __tablename__ = "ticket_messages"
    __table_args__ = (
        CheckConstraint("body <> ''", name="body_not_empty"),
        Index("ix_ticket_messages_ticket_oldest", "ticket_id", "created_at", "id"),
    )

    id: Mapped[str] = uuid_pk()
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False)
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    author_name: Mapped[str] = mapped_column(String(200), nullable=False)
    author_is_staff: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class TicketCount(db.Model):
    """How many tickets have (user_name, status); ``user_name = ''`` counts all names."""

    __tablename__ = "ticket_counts"
    __table_args__ = (CheckConstraint("n >= 0", name="n_not_negative"),)

    user_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
