"""The priced catalogue: services the garage performs and parts (warehouse skus) it sells."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, CheckConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import Money, created_at_column, updated_at_column, uuid_pk

ITEM_KINDS = ("service", "part")


class CatalogueItem(db.Model):
    """One priced line of the catalogue; orders copy its price, so editing it never
    changes an order already placed."""

    __tablename__ = "catalogue_items"
    __table_args__ = (
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("kind IN ('service', 'part')", name="kind_known"),
        # A part is a warehouse sku; a service has none.
        CheckConstraint("kind = 'part' OR sku IS NULL", name="only_parts_have_sku"),
    )

    id: Mapped[str] = uuid_pk()
    code: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="service")
    sku: Mapped[str | None] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    price: Mapped[Decimal] = mapped_column(Money, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    # Optimistic locking, as for cars: two concurrent edits cannot both win; the version is the ETag.
    __mapper_args__ = {"version_id_col": version}
