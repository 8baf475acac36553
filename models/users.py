"""Users and their roles."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import created_at_column, uuid_pk

ROLES = ("customer", "staff", "admin")


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('customer', 'staff', 'admin')", name="role_known"),)

    id: Mapped[str] = uuid_pk()
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    full_name: Mapped[str] = mapped_column(String(200), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="customer")
    created_at: Mapped[datetime] = created_at_column()

    @property
    def is_staff(self) -> bool:
        return self.role in ("staff", "admin")
