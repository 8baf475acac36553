"""The parts warehouse: warehouses, stock levels, the movement ledger, commands, movements.

The database keeps the invariants itself: a stock level can never go below zero
(CHECK), a command or a movement side can be in the ledger only once (UNIQUE), and a
command's status is one of a known few. The service adds conditional UPDATEs so that
concurrent consumers get a clean "rejected" instead of a constraint error.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.base import UTCDateTime, created_at_column, utcnow, uuid_pk

MAIN_WAREHOUSE = "main"
ACTIONS = ("increase", "decrease")
COMMAND_STATUSES = ("pending", "applied", "rejected")
MOVEMENT_EVENTS = ("departure", "arrival")
SIDE_STATUSES = ("applied", "rejected")
REJECTED_INSUFFICIENT = "insufficient_stock"

ID_LENGTH = 64  # sku and warehouse_id: 1..64 visible characters
COMMAND_ID_LENGTH = 128  # outside clients choose their command ids; the inbox allows 128


class Warehouse(db.Model):
    """A warehouse appears the first time stock arrives in it; ``main`` is seeded."""

    __tablename__ = "warehouses"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = created_at_column()


class StockLevel(db.Model):
    """How many of ``sku`` are in ``warehouse_id`` now."""

    __tablename__ = "stock_levels"
    __table_args__ = (
        CheckConstraint("qty >= 0", name="qty_not_negative"),
        Index("ix_stock_levels_sku", "sku"),
    )

    warehouse_id: Mapped[str] = mapped_column(ForeignKey("warehouses.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    qty: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)  # sums of many commands
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class StockLedgerEntry(db.Model):
    """Append-only: every applied change, who made it, why, and which command or message.

    The service only ever inserts here. The UNIQUE constraints are the last line of
    "applied once": one entry per command, one per movement side.
    """

    __tablename__ = "stock_ledger"
    __table_args__ = (
        CheckConstraint("qty_after >= 0", name="qty_after_not_negative"),
        CheckConstraint("delta <> 0", name="delta_not_zero"),
        UniqueConstraint("command_id", name="uq_stock_ledger_command_id"),
        UniqueConstraint("movement_id", "reason", name="uq_stock_ledger_movement_side"),
        Index("ix_stock_ledger_item", "warehouse_id", "sku", "created_at"),
    )

    id: Mapped[str] = uuid_pk()
    warehouse_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    sku: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    delta: Mapped[int] = mapped_column(Integer, nullable=False)
    qty_after: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)  # increase/decrease/arrival/departure
    actor: Mapped[str | None] = mapped_column(String(128))  # user id, or the outside source
    command_id: Mapped[str | None] = mapped_column(String(COMMAND_ID_LENGTH))
    movement_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    message_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = created_at_column()


class StockCommand(db.Model):
    """An increase or decrease asked for over HTTP or the broker, applied by the consumer."""

    __tablename__ = "stock_commands"
    __table_args__ = (
        CheckConstraint("action IN ('increase', 'decrease')", name="action_known"),
        CheckConstraint("status IN ('pending', 'applied', 'rejected')", name="status_known"),
        CheckConstraint("qty > 0", name="qty_positive"),
        # Idempotency-Key is the caller's: the same key from the same user is one command.
        UniqueConstraint("issued_by", "idempotency_key", name="uq_stock_commands_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(COMMAND_ID_LENGTH), primary_key=True)  # the command_id
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    sku: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    qty: Mapped[int] = mapped_column(Integer, nullable=False)
    warehouse_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False, default=MAIN_WAREHOUSE)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    reason: Mapped[str | None] = mapped_column(String(64))
    issued_by: Mapped[str | None] = mapped_column(String(36))  # the staff user; None from the broker
    source: Mapped[str | None] = mapped_column(String(128))  # who sent it when not a user
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = created_at_column()
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StockMovement(db.Model):
    """One shipment between warehouses: its departure side and its arrival side.

    Each side is written once (a conditional UPDATE ``WHERE <side>_quantity IS NULL``),
    whichever comes first, so a redelivered or re-sent side changes nothing.
    """

    __tablename__ = "stock_movements"
    __table_args__ = (
        CheckConstraint("source_quantity > 0", name="source_quantity_positive"),
        CheckConstraint("destination_quantity > 0", name="destination_quantity_positive"),
        CheckConstraint("source_status IN ('applied', 'rejected')", name="source_status_known"),
        CheckConstraint("destination_status IN ('applied', 'rejected')", name="destination_status_known"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)  # the movement_id
    sku: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    source_warehouse_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    source_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    source_quantity: Mapped[int | None] = mapped_column(Integer)
    source_status: Mapped[str | None] = mapped_column(String(16))
    destination_warehouse_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    destination_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    destination_quantity: Mapped[int | None] = mapped_column(Integer)
    destination_status: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = created_at_column()
