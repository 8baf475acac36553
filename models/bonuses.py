"""The bonus (loyalty) account: an append-only ledger plus a balance that cannot go negative."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import ZERO, Money, created_at_column, updated_at_column, uuid_pk

ENTRY_KINDS = ("accrual", "promo", "spend", "reversal")


class BonusAccount(db.Model):
    """The running balance, changed only by conditional UPDATEs beside a ledger entry."""

    __tablename__ = "bonus_accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_not_negative"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(Money, nullable=False, default=ZERO)
    updated_at: Mapped[datetime] = updated_at_column()


class BonusEntry(db.Model):
    """One movement of a balance; never updated or deleted. ``amount`` is signed so the
    entries sum to the balance: accruals and promos add, spends subtract, a reversal
    takes back a refunded payment's accrual or gives back a cancelled order's spend."""

    __tablename__ = "bonus_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('accrual', 'promo', 'spend', 'reversal')", name="kind_known"),
        CheckConstraint(
            # A reversal takes back an accrual (<= 0) or gives back a spend (> 0).
            "(kind IN ('accrual', 'promo') AND amount > 0) OR (kind = 'spend' AND amount < 0) OR kind = 'reversal'",
            name="amount_sign_matches_kind",
        ),
        CheckConstraint("unreversed >= 0", name="unreversed_not_negative"),
        # At most one accrual and one reversal per payment, whatever event ids arrive.
        UniqueConstraint("kind", "payment_id", name="uq_bonus_entries_kind_payment"),
        # A promo code once per user.
        UniqueConstraint("user_id", "promo_code_id", name="uq_bonus_entries_user_promo"),
        Index("ix_bonus_entries_user_newest", "user_id", "created_at", "id"),
    )

    id: Mapped[str] = uuid_pk()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)
    reference: Mapped[str | None] = mapped_column(String(128))  # payment id, promo code, order id
    payment_id: Mapped[str | None] = mapped_column(ForeignKey("payments.id", ondelete="SET NULL"))
    promo_code_id: Mapped[str | None] = mapped_column(ForeignKey("promo_codes.id", ondelete="SET NULL"))
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    # A reversal that met a balance already spent records what it could not take back.
    unreversed: Mapped[Decimal] = mapped_column(Money, nullable=False, default=ZERO)
    event_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = created_at_column()


class PromoCode(db.Model):
    __tablename__ = "promo_codes"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[str] = uuid_pk()
    code: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
