"""Tickets end to end over the real RabbitMQ: a staff reply reaches the owner as one notification."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from extensions import db
from models.messaging import InboxMessage
from models.notifications import Notification
from tests.conftest import make_user


@pytest.mark.broker
@pytest.mark.slow
def test_staff_reply_reaches_the_owner_through_the_broker(broker_app, broker_client, start_worker, wait_until):
    start_worker(broker_app)
    owner = make_user(broker_client, "customer", name="Bruno Broker")
    staff = make_user(broker_client, "staff", name="Stella Staff")
    ticket = owner.post("/api/v1/tickets", json={"subject": "Rattle", "description": "At 80 km/h."}).get_json()
    reply = staff.post(f"/api/v1/tickets/{ticket['id']}/messages", json={"body": "Bring it in."})
    assert reply.status_code == 201

    def owner_notifications():
        return owner.get("/api/v1/notifications").get_json()["items"]

    [note] = wait_until(owner_notifications, message="the owner's notification")
    assert note["kind"] == "ticket.message_added" and note["reference"] == ticket["id"] and note["read"] is False
    # every ticket event went through the notifications queue (created included), each once
    wait_until(
        lambda: (
            db.session.scalar(
                select(func.count()).select_from(InboxMessage).where(InboxMessage.consumer == "carhub.notifications")
            )
            == 2
        ),
        message="both ticket events consumed",
    )
    assert db.session.scalar(select(func.count()).select_from(Notification)) == 1
    assert staff.get("/api/v1/notifications").get_json()["total"] == 0
