"""Traffic fines, issued against a licence plate (not a car: a plate may change hands).

Who may see a fine is decided at read time from ``cars.owner_id``; the fine itself only
knows the plate. Paying is a conditional UPDATE on ``paid_at IS NULL``, so a fine is paid
at most once however many requests race.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import Money, UTCDateTime, created_at_column, uuid_pk


class Fine(db.Model):
    __tablename__ = "fines"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("length(license_plate) > 0", name="plate_not_empty"),
        CheckConstraint("length(reason) > 0", name="reason_not_empty"),
        # Paid fines always say who paid and when, together or not at all.
        CheckConstraint("(paid_at IS NULL) = (paid_by IS NULL)", name="paid_at_with_paid_by"),
        # The list query: one plate's fines, newest first, id as the tie-break.
        Index("ix_fines_plate_issued", "license_plate", "issued_at", "id"),
        # Staff's list of every fine, in the same order.
        Index("ix_fines_issued", "issued_at", "id"),
    )

    id: Mapped[str] = uuid_pk()
    license_plate: Mapped[str] = mapped_column(String(16), nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)
    reason: Mapped[str] = mapped_column(String(500), nullable=False)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    issued_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Who paid: the plate's owner or the staff member who took the money at the desk.
    # Kept as a plain id (no FK): the record of a payment outlives the account.
    paid_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = created_at_column()
