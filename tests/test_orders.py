"""Catalogue and service orders: pricing, the status machine, reviews, ownership, events."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from extensions import db
from models.messaging import OutboxMessage
from models.notifications import Notification
from services import catalogue
from tests.messaging_helpers import drain_outbox
from tests.orders_helpers import make_car, order_costing, place_order, priced_item

ORDER = "/api/v1/orders"


def notification_titles(user_id: str) -> list[str]:
    return list(db.session.scalars(select(Notification.title).where(Notification.user_id == user_id)))


# --- catalogue ---------------------------------------------------------------------------


def test_catalogue_is_seeded_and_public(anonymous):
    response = anonymous.get("/api/v1/services")
    assert response.status_code == 200
    page = response.get_json()
    codes = {item["code"]: item for item in page["items"]}
    for code in ("washing", "polishing", "detailing", "oil_change", "diagnostics"):
        assert code in codes
    assert codes["washing"]["price"] == "1500.00"
    assert codes["oil_filter"]["kind"] == "part" and codes["oil_filter"]["sku"] == "OIL-FILTER-STD"
    assert page["total"] == len(catalogue.DEFAULT_ITEMS)

    parts = anonymous.get("/api/v1/services?kind=part").get_json()["items"]
    assert parts and all(item["kind"] == "part" for item in parts)


def test_seeding_twice_changes_nothing(app, staff):
    from services import reference_data

    assert staff.patch("/api/v1/services/washing", json={"price": "1700.00"}).status_code == 200
    reference_data.seed()
    reference_data.seed()
    items = staff.get("/api/v1/services").get_json()
    assert items["total"] == len(catalogue.DEFAULT_ITEMS)
    assert staff.get("/api/v1/services/washing").get_json()["price"] == "1700.00"  # staff's price kept


def test_only_staff_edit_the_catalogue(customer, staff, anonymous):
    body = {"code": "ceramic", "name": "Ceramic coating", "price": "20000"}
    assert anonymous.post("/api/v1/services", json=body).status_code == 401
    assert customer.post("/api/v1/services", json=body).status_code == 403
    created = staff.post("/api/v1/services", json=body)
    assert created.status_code == 201
    assert created.get_json()["price"] == "20000.00"
    assert staff.post("/api/v1/services", json=body).status_code == 409
    assert customer.patch("/api/v1/services/ceramic", json={"price": "1"}).status_code == 403
    assert staff.patch("/api/v1/services/nope", json={"price": "1"}).status_code == 404
    bad = staff.post("/api/v1/services", json={"code": "x", "name": "X", "price": "-1", "sku": "S"})
    assert bad.status_code == 422
    assert "price" in bad.get_json()["errors"]
    assert staff.post("/api/v1/services", json={"code": "y", "name": "Y", "price": "1", "sku": "S1"}).status_code == 422


def test_a_price_change_is_seen_at_once(anonymous, staff):
    assert anonymous.get("/api/v1/services/washing").get_json()["price"] == "1500.00"
    anonymous.get("/api/v1/services")  # fill the list cache
    staff.patch("/api/v1/services/washing", json={"price": "1600.00"})
    assert anonymous.get("/api/v1/services/washing").get_json()["price"] == "1600.00"
    listed = {item["code"]: item for item in anonymous.get("/api/v1/services").get_json()["items"]}
    assert listed["washing"]["price"] == "1600.00"


# --- placing orders ----------------------------------------------------------------------


def test_order_is_priced_from_the_catalogue(staff, customer):
    car = make_car(staff, owner=customer)
    created = place_order(
        customer, car["id"], [{"code": "washing", "qty": 2}, {"code": "oil_filter", "qty": 1}, {"code": "washing"}]
    )
    assert created.status_code == 201, created.get_json()
    order = created.get_json()
    assert created.headers["Location"].endswith(f"{ORDER}/{order['id']}")
    assert order["status"] == "new"
    assert order["user_id"] == customer.user["id"] and order["car_id"] == car["id"]
    assert order["total"] == "5150.00"  # 3 x 1500.00 + 650.00
    assert order["amount_due"] == "5150.00" and order["paid"] is False
    lines = {line["code"]: line for line in order["lines"]}
    assert lines["washing"] == {
        "code": "washing",
        "name": "Exterior and interior wash",
        "kind": "service",
        "unit_price": "1500.00",
        "qty": 3,
        "amount": "4500.00",
    }
    assert lines["oil_filter"]["amount"] == "650.00"

    # The price is copied: a later change does not touch the order.
    staff.patch("/api/v1/services/washing", json={"price": "9999.00"})
    again = customer.get(f"{ORDER}/{order['id']}").get_json()
    assert again["total"] == "5150.00" and again["lines"][0]["unit_price"] == "1500.00"


def test_the_client_cannot_set_the_total(staff, customer):
    car = make_car(staff, owner=customer)
    response = place_order(customer, car["id"], [{"code": "washing", "qty": 1}], total="0.01")
    assert response.status_code == 422
    assert "total" in response.get_json()["errors"]


def test_order_for_a_missing_car_is_404(customer):
    response = place_order(customer, "00000000-0000-4000-8000-000000000000", [{"code": "washing", "qty": 1}])
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "order.created")) is None


def test_unknown_or_withdrawn_service_is_422(staff, customer):
    car = make_car(staff, owner=customer)
    response = place_order(customer, car["id"], [{"code": "washing"}, {"code": "teleportation", "qty": 1}])
    assert response.status_code == 422
    assert "teleportation" in response.get_json()["detail"]
    staff.patch("/api/v1/services/polishing", json={"active": False})
    assert place_order(customer, car["id"], [{"code": "polishing"}]).status_code == 422


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"services": []}, "services"),
        ({"services": [{"code": "washing", "qty": 0}]}, "services.0.qty"),
        ({"services": [{"code": "washing", "qty": "2"}]}, "services.0.qty"),
        ({"desired_time": "2001-01-01T10:00:00Z"}, "desired_time"),
        ({"desired_time": "soon"}, "desired_time"),
        ({"car_id": "not-a-uuid"}, "car_id"),
    ],
)
def test_invalid_orders_are_422(staff, customer, overrides, field):
    car = make_car(staff, owner=customer)
    body = {"car_id": car["id"], "services": [{"code": "washing", "qty": 1}], **overrides}
    response = place_order(customer, body.pop("car_id"), body.pop("services"), **body)
    assert response.status_code == 422
    assert field in response.get_json()["errors"], response.get_json()


def test_order_created_event_and_notification(staff, customer):
    order = order_costing(staff, customer, "100.00")
    row = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "order.created"))
    assert row.subject == order["id"]
    assert row.data["user_id"] == customer.user["id"] and row.data["total"] == "100.00"
    drain_outbox()
    titles = notification_titles(customer.user["id"])
    assert "Your order is placed" in titles


# --- the status machine ------------------------------------------------------------------


def set_status(staff, order_id, status, **kwargs):
    return staff.patch(f"{ORDER}/{order_id}/status", json={"status": status}, **kwargs)


def test_status_machine_happy_path_emits_and_notifies(staff, customer):
    order = order_costing(staff, customer, "100.00")
    for status in ("confirmed", "in_progress", "done"):
        response = set_status(staff, order["id"], status)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["status"] == status
    changes = db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.type == "order.status_changed").order_by(OutboxMessage.created_at)
    ).all()
    assert [(c.data["from"], c.data["to"]) for c in changes] == [
        ("new", "confirmed"),
        ("confirmed", "in_progress"),
        ("in_progress", "done"),
    ]
    drain_outbox()
    titles = set(notification_titles(customer.user["id"]))
    assert {"Your order is confirmed", "Your order is in progress", "Your order is done: your car is ready"} <= titles


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), ["in_progress", "done", "new"]),
        (("confirmed",), ["new", "done", "confirmed"]),
        (("confirmed", "in_progress"), ["new", "confirmed"]),
        (("confirmed", "in_progress", "done"), ["cancelled", "in_progress", "new", "done"]),
        (("cancelled",), ["new", "confirmed", "in_progress", "done", "cancelled"]),
        (("confirmed", "cancelled"), ["confirmed", "in_progress"]),
        (("confirmed", "in_progress", "cancelled"), ["done"]),
    ],
)
def test_illegal_status_changes_are_409(staff, customer, path, illegal):
    order = order_costing(staff, customer, "100.00")
    for status in path:
        assert set_status(staff, order["id"], status).status_code == 200
    before = db.session.query(OutboxMessage).count()
    for status in illegal:
        response = set_status(staff, order["id"], status)
        assert response.status_code == 409, (path, status)
        assert response.headers["Content-Type"] == "application/problem+json"
    assert db.session.query(OutboxMessage).count() == before  # a refused change emits nothing
    assert customer.get(f"{ORDER}/{order['id']}").get_json()["status"] == (path[-1] if path else "new")


def test_status_change_rules(staff, customer):
    order = order_costing(staff, customer, "100.00")
    assert set_status(customer, order["id"], "confirmed").status_code == 403
    assert set_status(staff, "00000000-0000-4000-8000-000000000000", "confirmed").status_code == 404
    assert set_status(staff, order["id"], "paid").status_code == 422


# --- reading and ownership ---------------------------------------------------------------


def test_owner_and_staff_read_others_get_404(staff, customer, other_customer):
    mine = order_costing(staff, customer, "100.00")
    theirs = order_costing(staff, other_customer, "200.00")
    assert customer.get(f"{ORDER}/{mine['id']}").status_code == 200
    assert staff.get(f"{ORDER}/{mine['id']}").status_code == 200
    hidden = other_customer.get(f"{ORDER}/{mine['id']}")
    assert hidden.status_code == 404
    assert hidden.get_json()["status"] == 404

    listed = customer.get(ORDER).get_json()
    assert [o["id"] for o in listed["items"]] == [mine["id"]] and listed["total"] == 1
    everyone = staff.get(ORDER).get_json()
    assert {o["id"] for o in everyone["items"]} == {mine["id"], theirs["id"]}
    only_theirs = staff.get(f"{ORDER}?user_id={other_customer.user['id']}").get_json()
    assert [o["id"] for o in only_theirs["items"]] == [theirs["id"]]
    # A customer cannot widen the list to someone else's orders.
    assert customer.get(f"{ORDER}?user_id={other_customer.user['id']}").get_json()["total"] == 1


def test_orders_list_is_paged_newest_first(staff, customer):
    ids = [order_costing(staff, customer, "10.00")["id"] for _ in range(3)]
    first = customer.get(f"{ORDER}?size=2").get_json()
    second = customer.get(f"{ORDER}?size=2&page=2").get_json()
    assert first["total"] == 3
    assert [o["id"] for o in first["items"] + second["items"]] == list(reversed(ids))
    assert customer.get(f"{ORDER}?size=0").status_code == 422


# --- reviews -----------------------------------------------------------------------------


def test_review_once_by_the_owner_when_done(staff, customer, other_customer):
    order = order_costing(staff, customer, "100.00")
    url = f"{ORDER}/{order['id']}/review"
    assert customer.post(url, json={"rating": 5}).status_code == 409  # not done yet
    for status in ("confirmed", "in_progress", "done"):
        set_status(staff, order["id"], status)
    assert customer.post(url, json={"rating": 6}).status_code == 422
    assert customer.post(url, json={"rating": 0}).status_code == 422
    assert other_customer.post(url, json={"rating": 1}).status_code == 404
    assert staff.post(url, json={"rating": 1}).status_code == 404  # staff are not the owner
    created = customer.post(url, json={"rating": 4, "comment": "quick and clean"})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["review"]["rating"] == 4
    assert created.get_json()["review"]["comment"] == "quick and clean"
    assert customer.post(url, json={"rating": 5}).status_code == 409  # once
    assert customer.get(f"{ORDER}/{order['id']}").get_json()["review"]["rating"] == 4


def test_cancelled_order_cannot_be_reviewed(staff, customer):
    order = order_costing(staff, customer, "100.00")
    set_status(staff, order["id"], "cancelled")
    assert customer.post(f"{ORDER}/{order['id']}/review", json={"rating": 3}).status_code == 409


def test_every_order_event_has_a_notification_rule():
    """What orders emit must have a handler on carhub.notifications, or it is dead-lettered."""
    from messaging.topology import queues_for
    from services.handlers import HANDLERS

    for event_type in ("order.created", "order.status_changed", "order.reviewed"):
        assert "carhub.notifications" in queues_for(event_type)
        assert event_type in HANDLERS["carhub.notifications"]


# --- ETags and If-Match ------------------------------------------------------------------


def test_order_etag_changes_with_every_change_and_if_match_is_honoured(staff, customer):
    order = order_costing(staff, customer, "100.00")
    url = f"{ORDER}/{order['id']}"
    first = customer.get(url)
    tag = first.headers["ETag"]
    assert tag == f'"{order["id"]}.1"'
    confirmed = set_status(staff, order["id"], "confirmed", headers={"If-Match": tag})
    assert confirmed.status_code == 200
    assert confirmed.headers["ETag"] != tag
    stale = set_status(staff, order["id"], "in_progress", headers={"If-Match": tag})
    assert stale.status_code == 412
    assert customer.get(url).get_json()["status"] == "confirmed"
    assert set_status(staff, order["id"], "in_progress", headers={"If-Match": "*"}).status_code == 200
    # A payment changes the order too, so its ETag moves on.
    before = customer.get(url).headers["ETag"]
    assert customer.post("/api/v1/payments", json={"order_id": order["id"], "method": "cash"}).status_code == 201
    assert customer.get(url).headers["ETag"] != before


def test_catalogue_item_if_match(staff, anonymous):
    tag = anonymous.get("/api/v1/services/washing").headers["ETag"]
    changed = staff.patch("/api/v1/services/washing", json={"price": "1550.00"}, headers={"If-Match": tag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != tag
    stale = staff.patch("/api/v1/services/washing", json={"price": "1.00"}, headers={"If-Match": tag})
    assert stale.status_code == 412
    assert anonymous.get("/api/v1/services/washing").get_json()["price"] == "1550.00"


def test_an_order_too_large_for_the_money_column_is_422_not_500(staff, customer):
    car = make_car(staff, owner=customer)
    expensive = priced_item(staff, "9999999999.00")
    response = place_order(customer, car["id"], [{"code": expensive, "qty": 2}])
    assert response.status_code == 422
    assert "services" in response.get_json()["errors"]
