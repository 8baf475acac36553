"""A user's shopping cart: catalogue codes and quantities, no prices.

Prices are not stored: the cart shows the catalogue's current price, and the order
created at checkout copies the price of that moment into its lines.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import created_at_column, updated_at_column, uuid_pk

# The most of one code a cart line holds: a guard against typos, not a stock limit.
MAX_LINE_QTY = 999


class CartItem(db.Model):
    __tablename__ = "cart_items"
    __table_args__ = (
        CheckConstraint(f"qty >= 1 AND qty <= {MAX_LINE_QTY}", name="qty_in_range"),
        # One line per code: adding the same code again raises the line's qty (an upsert
        # on this key, so two concurrent adds both count).
        UniqueConstraint("user_id", "code", name="uq_cart_items_user_code"),
        Index("ix_cart_items_user_added", "user_id", "created_at", "id"),
    )

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    # The catalogue's code: a renamed code follows, a line cannot name a code that is not there.
    code: Mapped[str] = mapped_column(
        ForeignKey("catalogue_items.code", ondelete="CASCADE", onupdate="CASCADE"), nullable=False
    )
    qty: Mapped[int] = mapped_column(Integer, nullable=False)
    # Raised by every change of the line: the ETag, and what If-Match is checked against.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
