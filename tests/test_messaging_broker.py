"""The event backbone on the real RabbitMQ and PostgreSQL, with the real worker process."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from extensions import db
from models.messaging import InboxMessage, OutboxMessage
from models.notifications import Notification
from services import cars
from tests.conftest import make_user

pytestmark = [pytest.mark.broker, pytest.mark.slow]

VINS = iter(f"1HGCM82633A{n:06d}" for n in range(1, 1_000_000))


def new_car(owner_id: str | None) -> dict:
    return cars.create_car({"vin": next(VINS), "make": "Honda", "model": "Accord", "year": 2020, "owner_id": owner_id})


def count(model: type, *where: object) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_car_event_becomes_owner_notification_through_rabbitmq(broker_app, broker_client, start_worker, wait_until):
    owner = make_user(broker_client, "customer")
    start_worker(broker_app)
    car = new_car(owner.user["id"])

    wait_until(lambda: count(Notification) == 1, message="the owner's notification")
    notification = owner.get("/api/v1/notifications").get_json()["items"][0]
    assert notification["reference"] == car["id"] and notification["kind"] == "car.created"
    assert count(OutboxMessage, OutboxMessage.published_at.is_(None)) == 0
    assert count(InboxMessage) == 1
