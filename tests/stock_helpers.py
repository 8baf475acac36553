"""Helpers for the stock tests: commands over HTTP, warehouse movement messages, state."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from extensions import db
from models.messaging import OutboxMessage
from models.stock import StockCommand, StockLedgerEntry, StockLevel
from services.handlers import Event

STOCK_QUEUE = "carhub.stock"
COMMANDS = "/api/v1/stock/commands"
WEBHOOK = "/api/v1/webhooks/warehouse-movements"


def level_url(warehouse_id: str, sku: str) -> str:
    return f"/api/v1/warehouses/{warehouse_id}/products/{sku}"


def command(api: Any, action: str, sku: str, qty: Any, **extra: Any) -> Any:
    """POST a stock command; returns the response."""
    headers = extra.pop("headers", None)
    return api.post(COMMANDS, json={"action": action, "sku": sku, "qty": qty, **extra}, headers=headers)


def qty_of(api: Any, sku: str, warehouse_id: str = "main") -> int:
    response = api.get(level_url(warehouse_id, sku))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["qty"]


def movement_cloudevent(
    event: str,
    movement_id: str,
    warehouse_id: str,
    sku: str,
    quantity: int,
    *,
    timestamp: str = "2025-02-18T12:12:56Z",
    time: Any = 1737439421623,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A movement exactly as a warehouse system publishes it (EVENTS.md)."""
    return {
        "id": event_id or str(uuid.uuid4()),
        "source": "WH-3322",
        "specversion": "1.0",
        "type": "ru.retail.warehouses.movement",
        "datacontenttype": "application/json",
        "dataschema": "ru.retail.warehouses.movement.v1.0",
        "time": time,
        "subject": f"WH-3322:{event.upper()}",
        "destination": "ru.retail.warehouses",
        "data": {
            "movement_id": movement_id,
            "warehouse_id": warehouse_id,
            "timestamp": timestamp,
            "event": event,
            "product_id": sku,
            "quantity": quantity,
        },
    }


def movement_event(cloudevent: dict[str, Any]) -> Event:
    """What the consumer dispatches for that CloudEvent on its routing key."""
    return Event(
        id=cloudevent["id"],
        type=f"stock.movement.{cloudevent['data']['event']}",
        data=cloudevent["data"],
        source=cloudevent["source"],
        subject=cloudevent.get("subject"),
    )


def bare_command(action: str, sku: str, qty: Any, message_id: str | None = None, **extra: Any) -> Event:
    body = {"action": action, "sku": sku, "qty": qty, **extra}
    return Event(
        id=message_id or extra.get("command_id") or str(uuid.uuid4()),
        type=f"stock.command.{action}",
        data=body,
        source="external",
    )


def outbox_types() -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(select(OutboxMessage.type).order_by(OutboxMessage.created_at, OutboxMessage.id)))


def levels() -> dict[tuple[str, str], int]:
    db.session.expire_all()
    rows = db.session.execute(select(StockLevel.warehouse_id, StockLevel.sku, StockLevel.qty))
    return {(row.warehouse_id, row.sku): row.qty for row in rows}


def ledger_count(**where: Any) -> int:
    query = select(func.count()).select_from(StockLedgerEntry)
    for name, value in where.items():
        query = query.where(getattr(StockLedgerEntry, name) == value)
    return db.session.scalar(query) or 0


def command_statuses() -> dict[str, int]:
    db.session.expire_all()
    rows = db.session.execute(select(StockCommand.status, func.count()).group_by(StockCommand.status))
    return {row[0]: row[1] for row in rows.all()}
