"""Shared steps of the orders, payments and bonuses tests: a car, a priced item, an order, a payment."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from extensions import db
from models.bonuses import BonusAccount, BonusEntry

_vins = (f"5YJSA1E2XHF{n:06d}" for n in itertools.count(200000))


def tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()


def make_car(staff, owner=None) -> dict:
    body = {"vin": next(_vins), "make": "Lada", "model": "Vesta", "year": 2021}
    if owner is not None:
        body["owner_id"] = owner.user["id"]
    response = staff.post("/api/v1/cars", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def priced_item(staff, price: str, kind: str = "service") -> str:
    """A catalogue item costing exactly ``price``; returns its code."""
    code = f"test_{uuid.uuid4().hex[:10]}"
    body = {"code": code, "name": f"Test {price}", "price": price, "kind": kind}
    response = staff.post("/api/v1/services", json=body)
    assert response.status_code == 201, response.get_json()
    return code


def place_order(user, car_id: str, services: list[dict], **overrides):
    body = {"car_id": car_id, "desired_time": tomorrow(), "description": "strange noise", "services": services}
    body.update(overrides)
    return user.post("/api/v1/orders", json=body)


def order_costing(staff, user, price: str) -> dict:
    """An order of ``user`` whose total is ``price``."""
    car = make_car(staff, owner=user)
    response = place_order(user, car["id"], [{"code": priced_item(staff, price), "qty": 1}])
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["total"] == price
    return response.get_json()


def pay(user, order_id: str, method: str = "card", key: str | None = None):
    headers = {"Idempotency-Key": key} if key else None
    return user.post("/api/v1/payments", json={"order_id": order_id, "method": method}, headers=headers)


def balance(user) -> str:
    response = user.get("/api/v1/bonuses/me")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["balance"]


def ledger_sums_to_balance(user_id: str) -> bool:
    """The invariant behind the ledger: the entries add up to the balance row."""
    entries = db.session.scalars(select(BonusEntry.amount).where(BonusEntry.user_id == user_id)).all()
    stored = db.session.scalar(select(BonusAccount.balance).where(BonusAccount.user_id == user_id))
    return sum(entries, Decimal("0.00")) == Decimal(stored or 0)
