"""The cart: add (merging codes), change, remove, current prices, checkout into an order."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

_vins = itertools.count(1)
MISSING_ID = "00000000-0000-0000-0000-000000000000"


def offer(code, price, name=None, kind="service"):
    """A catalogue item of our own (independent of what the seeders put there)."""
    from services import catalogue

    return catalogue.create_item({"code": code, "name": name or code.title(), "kind": kind, "price": Decimal(price)})


def reprice(current_code, **fields):
    from services import catalogue

    return catalogue.update_item(current_code, fields)


@pytest.fixture
def offers(app):
    offer("t-wash", "1500.00", "Test wash")
    offer("t-polish", "6000.50", "Test polish")
    offer("t-filter", "650.00", "Test filter", kind="part")
    return ("t-wash", "t-polish", "t-filter")


def add(api, code, qty=None):
    body = {"code": code} if qty is None else {"code": code, "qty": qty}
    return api.post("/api/v1/cart/items", json=body)


def add_car(staff, owner):
    body = {
        "vin": f"5YJSA1E26HF{next(_vins):06d}",
        "make": "Skoda",
        "model": "Octavia",
        "year": 2021,
        "owner_id": owner.user["id"],
    }
    response = staff.post("/api/v1/cars", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def tomorrow():
    return (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()


def cart_of(api):
    response = api.get("/api/v1/cart")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def order_rows():
    from sqlalchemy import func, select

    from extensions import db
    from models.orders import Order

    return db.session.scalar(select(func.count()).select_from(Order))


def outbox(type_):
    from sqlalchemy import select

    from extensions import db
    from models.messaging import OutboxMessage

    return list(db.session.scalars(select(OutboxMessage).where(OutboxMessage.type == type_)))


# --- reading and adding ----------------------------------------------------------------


def test_a_new_cart_is_empty(app, customer):
    assert cart_of(customer) == {"items": [], "total": "0.00"}


def test_anonymous_gets_401(app, anonymous, offers):
    assert anonymous.get("/api/v1/cart").status_code == 401
    assert add(anonymous, "t-wash").status_code == 401
    assert anonymous.post("/api/v1/cart/checkout", json={}).status_code == 401


def test_add_items_and_the_same_code_again_raises_the_qty(app, customer, offers):
    first = add(customer, "t-wash", 1)
    assert first.status_code == 201, first.get_json()
    line = first.get_json()
    assert {k: line[k] for k in ("code", "name", "qty", "price", "amount", "available")} == {
        "code": "t-wash",
        "name": "Test wash",
        "qty": 1,
        "price": "1500.00",
        "amount": "1500.00",
        "available": True,
    }
    assert add(customer, "t-polish", 2).status_code == 201
    again = add(customer, " T-Wash ", 2).get_json()
    assert again["id"] == line["id"] and again["qty"] == 3

    body = cart_of(customer)
    assert [(item["id"], item["code"], item["qty"], item["price"]) for item in body["items"]] == [
        (line["id"], "t-wash", 3, "1500.00"),
        (body["items"][1]["id"], "t-polish", 2, "6000.50"),
    ]
    assert body["total"] == "16501.00"  # 3 * 1500.00 + 2 * 6000.50


def test_qty_defaults_to_one(app, customer, offers):
    response = add(customer, "t-filter")
    assert response.status_code == 201 and response.get_json()["qty"] == 1


def test_the_cart_shows_the_catalogues_current_price(app, customer, offers):
    add(customer, "t-wash", 2)
    assert cart_of(customer)["total"] == "3000.00"
    reprice("t-wash", price=Decimal("1750.00"))
    body = cart_of(customer)
    assert body["items"][0]["price"] == "1750.00" and body["items"][0]["amount"] == "3500.00"
    assert body["total"] == "3500.00"


def test_a_renamed_code_keeps_its_cart_lines(app, customer, offers):
    line = add(customer, "t-wash", 2).get_json()
    reprice("t-wash", code="t-wash-deluxe")
    [item] = cart_of(customer)["items"]
    assert (item["id"], item["code"], item["qty"], item["price"]) == (line["id"], "t-wash-deluxe", 2, "1500.00")


def test_each_user_has_their_own_cart(app, customer, other_customer, offers):
    add(customer, "t-wash", 1)
    add(other_customer, "t-wash", 5)
    assert [item["qty"] for item in cart_of(customer)["items"]] == [1]
    assert [item["qty"] for item in cart_of(other_customer)["items"]] == [5]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": "t-wash", "qty": 0}, "qty"),
        ({"code": "t-wash", "qty": -1}, "qty"),
        ({"code": "t-wash", "qty": 1000}, "qty"),
        ({"code": "t-wash", "qty": "2"}, "qty"),
        ({"code": "t-wash", "qty": 1.5}, "qty"),
        ({"code": "t-wash", "qty": None}, "qty"),
        ({"qty": 1}, "code"),
        ({"code": "", "qty": 1}, "code"),
        ({"code": "x" * 65, "qty": 1}, "code"),
        ({"code": 7, "qty": 1}, "code"),
        ({"code": "t-\x00wash", "qty": 1}, "code"),
        ({"code": "t-wash", "price": "1.00"}, "price"),
        ({"code": "no-such-code", "qty": 1}, "code"),
    ],
)
def test_invalid_items_are_422_with_the_field_named(app, customer, offers, body, field):
    response = customer.post("/api/v1/cart/items", json=body)
    assert response.status_code == 422, response.get_json()
    assert response.content_type == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert cart_of(customer)["items"] == []


def test_a_withdrawn_code_cannot_be_added(app, customer, offers):
    reprice("t-filter", active=False)
    response = add(customer, "t-filter")
    assert response.status_code == 422
    assert "code" in response.get_json()["errors"]


def test_a_line_is_capped_and_the_cap_is_a_409(app, customer, offers):
    assert add(customer, "t-wash", 999).status_code == 201
    response = add(customer, "t-wash", 1)
    assert response.status_code == 409
    assert response.content_type == "application/problem+json"
    assert cart_of(customer)["items"][0]["qty"] == 999


def test_malformed_json_is_400(app, customer):
    headers = {**customer._headers(None), "Content-Type": "application/json"}
    response = customer.client.post("/api/v1/cart/items", data="{", headers=headers)
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


# --- changing and removing -------------------------------------------------------------


def test_set_a_lines_quantity(app, customer, other_customer, offers):
    line = add(customer, "t-wash", 1).get_json()
    response = customer.patch(f"/api/v1/cart/items/{line['id']}", json={"qty": 4})
    assert response.status_code == 200 and response.get_json()["qty"] == 4
    assert customer.patch(f"/api/v1/cart/items/{line['id']}", json={"qty": 0}).status_code == 422
    assert other_customer.patch(f"/api/v1/cart/items/{line['id']}", json={"qty": 9}).status_code == 404
    assert cart_of(customer)["items"][0]["qty"] == 4


def test_remove_a_line(app, customer, offers):
    keep = add(customer, "t-wash", 1).get_json()
    drop = add(customer, "t-polish", 1).get_json()
    response = customer.delete(f"/api/v1/cart/items/{drop['id']}")
    assert response.status_code == 204 and response.data == b""
    assert [item["id"] for item in cart_of(customer)["items"]] == [keep["id"]]
    again = customer.delete(f"/api/v1/cart/items/{drop['id']}")
    assert again.status_code == 404 and again.content_type == "application/problem+json"
    assert customer.delete(f"/api/v1/cart/items/{MISSING_ID}").status_code == 404
    assert customer.delete("/api/v1/cart/items/nul%00byte").status_code == 404  # not a 500 from PostgreSQL
    assert customer.patch("/api/v1/cart/items/nul%00byte", json={"qty": 2}).status_code == 404


def test_lines_carry_an_etag_and_honour_if_match(app, customer, offers):
    created = add(customer, "t-wash", 1)
    line = created.get_json()
    first_tag = created.headers["ETag"]
    assert first_tag == f'"{line["id"]}.{line["version"]}"'

    merged = add(customer, "t-wash", 1)  # a change by another tab
    assert merged.headers["ETag"] != first_tag
    url = f"/api/v1/cart/items/{line['id']}"
    stale = customer.patch(url, json={"qty": 5}, headers={"If-Match": first_tag})
    assert stale.status_code == 412 and stale.content_type == "application/problem+json"
    assert customer.delete(url, headers={"If-Match": first_tag}).status_code == 412
    assert cart_of(customer)["items"][0]["qty"] == 2

    fresh = customer.patch(url, json={"qty": 5}, headers={"If-Match": merged.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.get_json()["qty"] == 5
    assert customer.delete(url, headers={"If-Match": f'"other", {fresh.headers["ETag"]}'}).status_code == 204
    assert cart_of(customer)["items"] == []


def test_another_users_line_is_404_and_stays(app, customer, other_customer, offers):
    theirs = add(other_customer, "t-wash", 2).get_json()
    response = customer.delete(f"/api/v1/cart/items/{theirs['id']}")
    assert response.status_code == 404
    # With a matching If-Match too: the line is not found, not "changed".
    tag = f'"{theirs["id"]}.{theirs["version"]}"'
    assert customer.delete(f"/api/v1/cart/items/{theirs['id']}", headers={"If-Match": tag}).status_code == 404
    assert [item["id"] for item in cart_of(other_customer)["items"]] == [theirs["id"]]


def test_empty_the_whole_cart(app, customer, other_customer, offers):
    add(customer, "t-wash")
    add(customer, "t-polish")
    add(other_customer, "t-wash")
    assert customer.delete("/api/v1/cart").status_code == 204
    assert cart_of(customer)["items"] == []
    assert len(cart_of(other_customer)["items"]) == 1


def test_a_withdrawn_line_stays_visible_but_out_of_the_total(app, customer, offers):
    add(customer, "t-wash", 1)
    add(customer, "t-filter", 2)
    reprice("t-filter", active=False)
    body = cart_of(customer)
    assert [item["available"] for item in body["items"]] == [True, False]
    assert body["total"] == "1500.00"


# --- checkout --------------------------------------------------------------------------


def test_checkout_places_an_order_at_todays_prices_and_empties_the_cart(app, staff, customer, offers):
    car = add_car(staff, customer)
    add(customer, "t-wash", 2)
    add(customer, "t-polish", 1)
    add(customer, "t-filter", 3)
    reprice("t-wash", price=Decimal("1600.00"))  # the price at checkout is what counts
    when = tomorrow()

    response = customer.post("/api/v1/cart/checkout", json={"car_id": car["id"], "desired_time": when})
    assert response.status_code == 201, response.get_json()
    order = response.get_json()
    assert order["status"] == "new" and order["car_id"] == car["id"] and order["user_id"] == customer.user["id"]
    assert order["total"] == "11150.50"  # 2 * 1600.00 + 6000.50 + 3 * 650.00
    assert sorted((line["code"], line["qty"], line["unit_price"]) for line in order["lines"]) == [
        ("t-filter", 3, "650.00"),
        ("t-polish", 1, "6000.50"),
        ("t-wash", 2, "1600.00"),
    ]
    assert response.headers["Location"].endswith(f"/api/v1/orders/{order['id']}")
    assert cart_of(customer) == {"items": [], "total": "0.00"}
    [event] = outbox("order.created")
    assert event.subject == order["id"]

    # The order keeps the prices of checkout; the catalogue may move on.
    from services import orders

    reprice("t-wash", price=Decimal("9999.00"))
    stored = orders.get_order(order["id"], orders.Viewer(customer.user["id"]))
    assert stored["total"] == Decimal("11150.50")


def test_checkout_of_an_empty_cart_is_409(app, staff, customer):
    car = add_car(staff, customer)
    response = customer.post("/api/v1/cart/checkout", json={"car_id": car["id"], "desired_time": tomorrow()})
    assert response.status_code == 409
    assert response.content_type == "application/problem+json"
    assert order_rows() == 0


def test_a_failed_checkout_leaves_the_cart_as_it_was(app, customer, offers):
    add(customer, "t-wash", 2)
    add(customer, "t-polish", 1)
    before = cart_of(customer)
    response = customer.post("/api/v1/cart/checkout", json={"car_id": MISSING_ID, "desired_time": tomorrow()})
    assert response.status_code == 404, response.get_json()
    assert response.content_type == "application/problem+json"
    assert cart_of(customer) == before
    assert order_rows() == 0
    assert outbox("order.created") == []


def test_checkout_with_a_withdrawn_item_is_409_and_changes_nothing(app, staff, customer, offers):
    car = add_car(staff, customer)
    add(customer, "t-wash", 1)
    add(customer, "t-filter", 1)
    reprice("t-filter", active=False)
    before = cart_of(customer)
    response = customer.post("/api/v1/cart/checkout", json={"car_id": car["id"], "desired_time": tomorrow()})
    assert response.status_code == 409
    assert "t-filter" in response.get_json()["detail"]
    assert cart_of(customer) == before and order_rows() == 0


def test_checkout_takes_only_the_callers_cart(app, staff, customer, other_customer, offers):
    car = add_car(staff, customer)
    add(customer, "t-wash", 1)
    add(other_customer, "t-polish", 4)
    response = customer.post("/api/v1/cart/checkout", json={"car_id": car["id"], "desired_time": tomorrow()})
    assert response.status_code == 201
    assert [line["code"] for line in response.get_json()["lines"]] == ["t-wash"]
    assert [item["qty"] for item in cart_of(other_customer)["items"]] == [4]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"desired_time": "2999-01-01T10:00:00Z"}, "car_id"),
        ({"car_id": "not-a-uuid", "desired_time": "2999-01-01T10:00:00Z"}, "car_id"),
        ({"car_id": MISSING_ID}, "desired_time"),
        ({"car_id": MISSING_ID, "desired_time": "soon"}, "desired_time"),
        ({"car_id": MISSING_ID, "desired_time": "2001-01-01T10:00:00Z"}, "desired_time"),
        ({"car_id": MISSING_ID, "desired_time": "2999-01-01T10:00:00Z", "total": "1.00"}, "total"),
        ({"car_id": MISSING_ID, "desired_time": "2999-01-01T10:00:00Z", "description": "a\x00b"}, "description"),
    ],
)
def test_invalid_checkout_is_422(app, customer, offers, body, field):
    add(customer, "t-wash", 1)
    response = customer.post("/api/v1/cart/checkout", json=body)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]
    assert len(cart_of(customer)["items"]) == 1


# --- concurrency (PostgreSQL) ----------------------------------------------------------


def _race(app, count, work):
    """Run ``work(i)`` in ``count`` threads, each with its own app context, released at once."""
    from extensions import db

    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index):
        with app.app_context():
            try:
                barrier.wait(timeout=30)
                results[index] = work(index)
            except Exception as exc:  # noqa: BLE001 - the caller asserts on the outcomes
                results[index] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_checkouts_of_one_cart_place_one_order(app, staff, customer, offers, backend):
    if backend != "real":
        pytest.skip("the race needs concurrent writers: PostgreSQL")
    from services import cart
    from services.errors import Conflict

    car = add_car(staff, customer)
    add(customer, "t-wash", 2)
    add(customer, "t-polish", 1)
    when = datetime.now(UTC) + timedelta(days=1)
    results = _race(app, 6, lambda _: cart.checkout(customer.user["id"], car["id"], when))

    placed = [result for result in results if isinstance(result, dict)]
    assert len(placed) == 1, results
    assert all(isinstance(result, Conflict) for result in results if result is not placed[0]), results
    assert placed[0]["total"] == Decimal("9000.50")
    assert order_rows() == 1
    assert cart_of(customer)["items"] == []


def test_concurrent_adds_of_one_code_all_count(app, customer, offers, backend):
    if backend != "real":
        pytest.skip("the race needs concurrent writers: PostgreSQL")
    from services import cart

    results = _race(app, 8, lambda index: cart.add_item(customer.user["id"], "t-wash", index + 1))
    assert not [result for result in results if isinstance(result, Exception)], results
    [line] = cart_of(customer)["items"]
    assert line["qty"] == sum(range(1, 9))


def test_cart_is_in_the_openapi_document(app, client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"/api/v1/cart", "/api/v1/cart/items", "/api/v1/cart/items/{item_id}", "/api/v1/cart/checkout"} <= set(paths)
