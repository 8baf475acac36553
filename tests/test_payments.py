"""Payments: amount from the order, once per order, Idempotency-Key, refunds, ownership."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from extensions import db
from models.messaging import OutboxMessage
from models.payments import Payment
from tests.orders_helpers import order_costing, pay

PAYMENTS = "/api/v1/payments"


def test_payment_takes_the_amount_from_the_order(staff, customer):
    order = order_costing(staff, customer, "4500.00")
    response = pay(customer, order["id"], "card")
    assert response.status_code == 201, response.get_json()
    payment = response.get_json()
    assert payment["amount"] == "4500.00"
    assert payment["status"] == "succeeded"
    assert payment["order_id"] == order["id"]
    assert payment["created_at"]
    assert response.headers["Location"].endswith(f"{PAYMENTS}/{payment['id']}")

    event = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "payment.succeeded"))
    assert event.subject == payment["id"]
    assert event.data["amount"] == "4500.00" and event.data["user_id"] == customer.user["id"]

    after = customer.get(f"/api/v1/orders/{order['id']}").get_json()
    assert after["paid"] is True and after["amount_due"] == "0.00"


def test_the_client_cannot_name_the_amount(staff, customer):
    order = order_costing(staff, customer, "4500.00")
    response = customer.post(PAYMENTS, json={"order_id": order["id"], "method": "card", "amount": "0.01"})
    assert response.status_code == 422
    assert "amount" in response.get_json()["errors"]
    assert customer.post(PAYMENTS, json={"order_id": order["id"], "method": "bitcoin"}).status_code == 422


def test_second_payment_is_409_and_the_database_agrees(staff, customer):
    order = order_costing(staff, customer, "100.00")
    assert pay(customer, order["id"]).status_code == 201
    again = pay(customer, order["id"], "cash")
    assert again.status_code == 409
    assert again.headers["Content-Type"] == "application/problem+json"
    assert db.session.query(Payment).count() == 1

    # Even past the code's check, the partial unique index refuses a second success.
    from sqlalchemy.exc import IntegrityError

    first = db.session.scalar(select(Payment))
    db.session.add(Payment(order_id=order["id"], user_id=first.user_id, amount=first.amount, method="cash"))
    try:
        db.session.commit()
        raised = False
    except IntegrityError:
        db.session.rollback()
        raised = True
    assert raised


def test_idempotency_key_returns_the_first_result(staff, customer):
    order = order_costing(staff, customer, "250.00")
    key = str(uuid.uuid4())
    first = pay(customer, order["id"], key=key)
    assert first.status_code == 201
    again = pay(customer, order["id"], key=key)
    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert db.session.query(Payment).count() == 1
    assert db.session.query(OutboxMessage).filter(OutboxMessage.type == "payment.succeeded").count() == 1
    # The key names that payment: reused for something else it is refused, changing nothing.
    other = order_costing(staff, customer, "10.00")
    assert pay(customer, other["id"], key=key).status_code == 422
    assert customer.get(f"/api/v1/orders/{other['id']}").get_json()["paid"] is False
    # Without the key, a retry is a second payment attempt: 409.
    assert pay(customer, order["id"]).status_code == 409


def test_idempotency_keys_are_per_user(staff, customer, other_customer):
    mine = order_costing(staff, customer, "10.00")
    theirs = order_costing(staff, other_customer, "20.00")
    assert pay(customer, mine["id"], key="same-key").status_code == 201
    response = pay(other_customer, theirs["id"], key="same-key")
    assert response.status_code == 201
    assert response.get_json()["amount"] == "20.00"


def test_only_the_owner_pays_and_reads(staff, customer, other_customer):
    order = order_costing(staff, customer, "300.00")
    assert pay(other_customer, order["id"]).status_code == 404
    assert pay(customer, str(uuid.uuid4())).status_code == 404
    payment = pay(customer, order["id"]).get_json()
    url = f"{PAYMENTS}/{payment['id']}"
    assert customer.get(url).status_code == 200
    assert staff.get(url).get_json()["amount"] == "300.00"
    assert other_customer.get(url).status_code == 404
    assert other_customer.get(PAYMENTS).get_json()["total"] == 0
    assert [p["id"] for p in customer.get(PAYMENTS).get_json()["items"]] == [payment["id"]]


def test_cancelled_order_cannot_be_paid(staff, customer):
    order = order_costing(staff, customer, "300.00")
    staff.patch(f"/api/v1/orders/{order['id']}/status", json={"status": "cancelled"})
    assert pay(customer, order["id"]).status_code == 409


def test_refund_by_staff_once(staff, customer):
    order = order_costing(staff, customer, "4500.00")
    payment = pay(customer, order["id"]).get_json()
    url = f"{PAYMENTS}/{payment['id']}/refund"
    assert customer.post(url).status_code == 403
    refunded = staff.post(url)
    assert refunded.status_code == 200, refunded.get_json()
    assert refunded.get_json()["status"] == "refunded" and refunded.get_json()["refunded_at"]
    assert staff.post(url).status_code == 409  # not succeeded any more
    assert staff.post(f"{PAYMENTS}/{uuid.uuid4()}/refund").status_code == 404
    event = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "payment.refunded"))
    assert event.data["payment_id"] == payment["id"] and event.data["amount"] == "4500.00"
    assert customer.get(f"/api/v1/orders/{order['id']}").get_json()["paid"] is False


def test_concurrent_retries_with_one_idempotency_key_make_one_payment(app, staff, customer):
    """Two requests with the same key at once (a client retrying on a timeout): one payment,
    both answered with it. Threads have their own app context, session and connection."""
    import threading

    from services import payments

    order = order_costing(staff, customer, "700.00")
    user_id = customer.user["id"]
    barrier = threading.Barrier(2)
    answers: list[object] = []

    def attempt() -> None:
        with app.app_context():
            barrier.wait(timeout=10)
            try:
                answers.append(payments.pay_order(user_id, order["id"], "card", "retry-key").payment["id"])
            except Exception as exc:  # noqa: BLE001 - reported below
                answers.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.session.expire_all()
    stored = db.session.scalars(select(Payment)).all()
    assert len(stored) == 1
    assert answers == [stored[0].id, stored[0].id], answers
    assert db.session.query(OutboxMessage).filter(OutboxMessage.type == "payment.succeeded").count() == 1
