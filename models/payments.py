"""Payments of orders: at most one succeeded payment per order, enforced by the database."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import Money, UTCDateTime, created_at_column, uuid_pk

PAYMENT_METHODS = ("card", "cash")
PAYMENT_STATUSES = ("succeeded", "refunded")


class Payment(db.Model):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        CheckConstraint("method IN ('card', 'cash')", name="method_known"),
        CheckConstraint("status IN ('succeeded', 'refunded')", name="status_known"),
        # One succeeded payment per order, whatever the application code does; a
        # refunded payment no longer counts, so a refunded order can be paid again.
        Index(
            "uq_payments_one_succeeded_per_order",
            "order_id",
            unique=True,
            postgresql_where=db.text("status = 'succeeded'"),
            sqlite_where=db.text("status = 'succeeded'"),
        ),
        # The same Idempotency-Key from the same user names the same payment.
        UniqueConstraint("user_id", "idempotency_key", name="uq_payments_user_idempotency_key"),
        Index("ix_payments_user_newest", "user_id", "created_at", "id"),
    )

    id: Mapped[str] = uuid_pk()
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), nullable=False, index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)
    method: Mapped[str] = mapped_column(String(8), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="succeeded")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = created_at_column()
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
