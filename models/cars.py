"""The fleet: cars with a unique VIN and plate, versioned for If-Match and concurrent edits."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import Money, created_at_column, updated_at_column, uuid_pk

CAR_STATUSES = ("available", "in_service", "sold")


class Car(db.Model):
    __tablename__ = "cars"
    __table_args__ = (
        CheckConstraint("status IN ('available', 'in_service', 'sold')", name="status_known"),
        CheckConstraint("year >= 1886", name="year_after_first_car"),
        CheckConstraint("mileage_km >= 0", name="mileage_not_negative"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        Index("ix_cars_make_model", "make", "model"),
    )

    id: Mapped[str] = uuid_pk()
    vin: Mapped[str] = mapped_column(String(17), unique=True, nullable=False)
    make: Mapped[str] = mapped_column(String(64), nullable=False)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    year: Mapped[int] = mapped_column(Integer, nullable=False)
    license_plate: Mapped[str | None] = mapped_column(String(16), unique=True)
    color: Mapped[str | None] = mapped_column(String(32))
    mileage_km: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="available", index=True)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    # Optimistic locking: an UPDATE carries "WHERE version = :seen", so two concurrent
    # edits cannot both win; the version is also the ETag.
    __mapper_args__ = {"version_id_col": version}
