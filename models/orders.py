"""Service orders: lines priced from the catalogue at order time, a status machine, a review."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from extensions import db
from models.base import ZERO, Money, UTCDateTime, created_at_column, updated_at_column, uuid_pk

ORDER_STATUSES = ("new", "confirmed", "in_progress", "done", "cancelled")


class Order(db.Model):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("status IN ('new', 'confirmed', 'in_progress', 'done', 'cancelled')", name="status_known"),
        CheckConstraint("total >= 0", name="total_not_negative"),
        # Bonus spent against the order can lower what is left to pay to zero, not below.
        CheckConstraint("bonus_spent >= 0 AND bonus_spent <= total", name="bonus_spent_within_total"),
        Index("ix_orders_user_newest", "user_id", "created_at", "id"),
    )

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    # The car may leave the fleet later; the order (and its payment) stays.
    car_id: Mapped[str | None] = mapped_column(ForeignKey("cars.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="new", index=True)
    desired_time: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    total: Mapped[Decimal] = mapped_column(Money, nullable=False)
    bonus_spent: Mapped[Decimal] = mapped_column(Money, nullable=False, default=ZERO)
    # Set by the payment that settled it, cleared by its refund (a conditional UPDATE
    # on this column is what keeps a bonus spend and a payment from crossing).
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Bumped by every conditional UPDATE of the row (status, payment, bonus spent): the ETag.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", cascade="all, delete-orphan", lazy="selectin", order_by="OrderLine.position"
    )
    review: Mapped[OrderReview | None] = relationship(lazy="selectin", cascade="all, delete-orphan")

    @property
    def amount_due(self) -> Decimal:
        """What a payment for this order charges: the total less bonus spent on it."""
        return self.total - self.bonus_spent


class OrderLine(db.Model):
    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("qty > 0", name="qty_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
        CheckConstraint("amount = unit_price * qty", name="amount_is_price_times_qty"),
    )

    id: Mapped[str] = uuid_pk()
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    unit_price: Mapped[Decimal] = mapped_column(Money, nullable=False)  # copied at order time
    qty: Mapped[int] = mapped_column(Integer, nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)

    order: Mapped[Order] = relationship(back_populates="lines")


class OrderReview(db.Model):
    """One per order: the primary key is the order id."""

    __tablename__ = "order_reviews"
    __table_args__ = (CheckConstraint("rating BETWEEN 1 AND 5", name="rating_1_to_5"),)

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
