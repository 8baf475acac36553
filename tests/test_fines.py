"""Fines: issue, list (customers see only their own plates), pay once, events."""

from __future__ import annotations

import itertools
import threading
from decimal import Decimal

import pytest

_vins = itertools.count(1)


def add_car(staff, owner, plate):
    """A car with ``plate`` owned by ``owner`` (an Api or None), created over HTTP."""
    body = {
        "vin": f"1HGCM82633A{next(_vins):06d}",
        "make": "Lada",
        "model": "Vesta",
        "year": 2020,
        "license_plate": plate,
        "owner_id": owner.user["id"] if owner else None,
    }
    response = staff.post("/api/v1/cars", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def issue(staff, plate="A123BC77", amount="500.00", reason="Speeding 20-40 km/h", issued_at="2026-11-01T10:00:00Z"):
    body = {"license_plate": plate, "amount": amount, "reason": reason, "issued_at": issued_at}
    return staff.post("/api/v1/fines", json=body)


def outbox(type_):
    from sqlalchemy import select

    from extensions import db
    from models.messaging import OutboxMessage

    return list(db.session.scalars(select(OutboxMessage).where(OutboxMessage.type == type_)))


# --- issuing ---------------------------------------------------------------------------


def test_staff_issues_a_fine_with_plate_normalised_and_an_event(app, staff):
    response = issue(staff, plate="  a123bc77 ", amount="1500.5")
    assert response.status_code == 201, response.get_json()
    fine = response.get_json()
    assert fine["license_plate"] == "A123BC77"
    assert fine["amount"] == "1500.50"
    assert fine["status"] == "unpaid" and fine["paid_at"] is None
    assert fine["issued_at"].startswith("2026-11-01T10:00:00")
    assert fine["issued_by"] == staff.user["id"]
    assert response.headers["Location"].endswith(f"/api/v1/fines/{fine['id']}")
    assert response.headers["ETag"] == f'"{fine["id"]}.unpaid"'

    [event] = outbox("fine.issued")
    assert event.subject == fine["id"]
    assert event.data["license_plate"] == "A123BC77" and event.data["amount"] == "1500.50"


def test_the_owners_of_the_fined_plate_are_notified(app, staff, customer, other_customer):
    from sqlalchemy import select

    from extensions import db
    from models.notifications import Notification
    from tests.messaging_helpers import drain_outbox

    add_car(staff, customer, "A123BC77")
    add_car(staff, other_customer, "B456CD99")
    drain_outbox()  # the car.created notifications
    fine = issue(staff, plate="a123bc77", amount="750.00").get_json()
    drain_outbox()

    told = list(db.session.scalars(select(Notification).where(Notification.kind == "fine.issued")))
    assert [(n.user_id, n.reference) for n in told] == [(customer.user["id"], fine["id"])]
    assert "750.00" in told[0].title and "A123BC77" in told[0].title
    assert issue(staff, plate="NOBODY1").status_code == 201
    drain_outbox()  # a plate no car has: nobody to tell, and nothing fails
    assert db.session.query(Notification).filter_by(kind="fine.issued").count() == 1


def test_naive_issued_at_is_taken_as_utc(app, staff):
    response = issue(staff, issued_at="2026-11-01T10:00:00")
    assert response.status_code == 201
    assert response.get_json()["issued_at"] in ("2026-11-01T10:00:00+00:00", "2026-11-01T10:00:00Z")


def test_customers_cannot_issue_fines(app, customer):
    response = issue(customer)
    assert response.status_code == 403
    assert response.content_type == "application/problem+json"


def test_anonymous_gets_401(app, anonymous):
    assert anonymous.get("/api/v1/fines").status_code == 401
    assert issue(anonymous).status_code == 401


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", "0"),
        ("amount", "0.00"),
        ("amount", "-5.00"),
        ("amount", "10.005"),
        ("amount", "12345678901.00"),
        ("amount", "NaN"),
        ("amount", "Infinity"),
        ("amount", "lots"),
        ("amount", True),
        ("amount", None),
        ("license_plate", ""),
        ("license_plate", "   "),
        ("license_plate", "X" * 17),
        ("license_plate", 123),
        ("license_plate", "A\x00B"),
        ("license_plate", "A\tB"),
        ("reason", ""),
        ("reason", "  "),
        ("reason", "r" * 501),
        ("reason", "nul\x00byte"),
        ("issued_at", "yesterday"),
        ("issued_at", "2999-01-01T00:00:00Z"),
        ("issued_at", None),
    ],
)
def test_invalid_fields_are_422_with_the_field_named(app, staff, field, value):
    body = {"license_plate": "A123BC77", "amount": "500.00", "reason": "Speeding", "issued_at": "2026-11-01T10:00:00Z"}
    body[field] = value
    response = staff.post("/api/v1/fines", json=body)
    assert response.status_code == 422, response.get_json()
    assert response.content_type == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert outbox("fine.issued") == []


def test_missing_and_unknown_fields_are_422(app, staff):
    response = staff.post("/api/v1/fines", json={"license_plate": "A123BC77", "colour": "red"})
    assert response.status_code == 422
    assert {"amount", "reason", "issued_at", "colour"} <= set(response.get_json()["errors"])


def test_amount_as_a_json_number_is_accepted(app, staff):
    response = issue(staff, amount=250.5)
    assert response.status_code == 201
    assert response.get_json()["amount"] == "250.50"


def test_malformed_json_is_400(app, staff):
    response = staff.client.post(
        "/api/v1/fines", data="{not json", headers={**staff._headers(None), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


# --- listing ---------------------------------------------------------------------------


def test_customer_sees_fines_of_their_own_plates_only(app, staff, customer, other_customer):
    add_car(staff, customer, "A123BC77")
    add_car(staff, customer, "B456CD99")
    add_car(staff, other_customer, "C789EF50")
    mine_1 = issue(staff, plate="A123BC77", issued_at="2026-11-01T10:00:00Z").get_json()
    mine_2 = issue(staff, plate="B456CD99", issued_at="2026-11-02T10:00:00Z").get_json()
    theirs = issue(staff, plate="C789EF50").get_json()
    issue(staff, plate="NOCAR000")  # a plate of no known car

    everything = customer.get("/api/v1/fines").get_json()
    assert [fine["id"] for fine in everything["items"]] == [mine_2["id"], mine_1["id"]]  # newest first
    assert everything["total"] == 2 and everything["page"] == 1 and everything["size"] == 10

    one_plate = customer.get("/api/v1/fines?license_plate=a123bc77").get_json()
    assert [fine["id"] for fine in one_plate["items"]] == [mine_1["id"]]

    # Another's plate looks exactly like a plate without fines: an empty list, no leak.
    probing = customer.get("/api/v1/fines?license_plate=C789EF50")
    assert probing.status_code == 200
    assert probing.get_json() == {"items": [], "page": 1, "size": 10, "total": 0}
    assert customer.get("/api/v1/fines?license_plate=NOCAR000").get_json()["total"] == 0

    other = other_customer.get("/api/v1/fines").get_json()
    assert [fine["id"] for fine in other["items"]] == [theirs["id"]]


def test_staff_see_every_fine_and_filter_by_plate_and_state(app, staff, customer):
    add_car(staff, customer, "A123BC77")
    first = issue(staff, plate="A123BC77").get_json()
    issue(staff, plate="NOCAR000")
    assert staff.get("/api/v1/fines").get_json()["total"] == 2
    assert staff.get("/api/v1/fines?license_plate=NOCAR000").get_json()["total"] == 1

    assert customer.post(f"/api/v1/fines/{first['id']}/pay").status_code == 200
    paid = staff.get("/api/v1/fines?paid=true").get_json()
    unpaid = staff.get("/api/v1/fines?paid=false").get_json()
    assert [fine["id"] for fine in paid["items"]] == [first["id"]]
    assert unpaid["total"] == 1 and unpaid["items"][0]["license_plate"] == "NOCAR000"


def test_a_car_sold_on_takes_its_fines_with_it(app, staff, customer, other_customer):
    car = add_car(staff, customer, "A123BC77")
    fine = issue(staff, plate="A123BC77").get_json()
    assert customer.get("/api/v1/fines").get_json()["total"] == 1
    assert staff.patch(f"/api/v1/cars/{car['id']}", json={"owner_id": other_customer.user["id"]}).status_code == 200
    assert customer.get("/api/v1/fines").get_json()["total"] == 0
    assert customer.get(f"/api/v1/fines/{fine['id']}").status_code == 404
    assert other_customer.get("/api/v1/fines").get_json()["items"][0]["id"] == fine["id"]


def test_list_pages_in_a_stable_order(app, staff, customer):
    add_car(staff, customer, "A123BC77")
    ids = [issue(staff, plate="A123BC77", issued_at="2026-11-01T10:00:00Z").get_json()["id"] for _ in range(5)]
    seen = []
    for page in (1, 2, 3):
        body = customer.get(f"/api/v1/fines?page={page}&size=2").get_json()
        assert body["total"] == 5 and body["page"] == page and body["size"] == 2
        seen += [fine["id"] for fine in body["items"]]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 5


def test_a_customer_with_many_cars_pages_like_the_plain_query(app, staff, customer):
    """Several plates take the per-plate merge: every page equals the plain sorted list."""
    from services import fines

    plates = ["M1", "M2", "M3"]
    for plate in plates:
        add_car(staff, customer, plate)
    times = ["2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z", "2026-11-03T10:00:00Z"]  # many ties
    created = [issue(staff, plate=plates[i % 3], issued_at=times[i % 4 % 3]).get_json() for i in range(23)]
    for fine in created[::5]:
        assert staff.post(f"/api/v1/fines/{fine['id']}/pay").status_code == 200
    issue(staff, plate="NOT-MINE")

    viewer = fines.Viewer(customer.user["id"])
    for paid in (None, True, False):
        expected = [
            fine["id"]
            for fine in sorted(created, key=lambda fine: (fine["issued_at"], fine["id"]), reverse=True)
            if paid is None or (fine["id"] in {f["id"] for f in created[::5]}) == paid
        ]
        for size in (1, 4, 7, 30):
            seen = []
            for page in range(1, len(expected) // size + 2):
                result = fines.list_fines(viewer, page, size, paid=paid)
                assert result.total == len(expected)
                seen += [fine["id"] for fine in result.items]
            assert seen == expected, (paid, size)


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "size=0",
        "size=101",
        "page=x",
        "paid=maybe",
        "license_plate=",
        "license_plate=A%00B",
        "page=100000000000000000000",
    ],
)
def test_bad_list_arguments_are_422(app, customer, query):
    response = customer.get(f"/api/v1/fines?{query}")
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"


# --- one fine, paying ------------------------------------------------------------------


def test_owner_reads_and_pays_their_fine_once(app, staff, customer):
    add_car(staff, customer, "A123BC77")
    fine = issue(staff, plate="A123BC77").get_json()

    one = customer.get(f"/api/v1/fines/{fine['id']}")
    assert one.status_code == 200 and one.get_json()["id"] == fine["id"]
    assert one.headers["ETag"] == f'"{fine["id"]}.unpaid"'

    paid = customer.post(f"/api/v1/fines/{fine['id']}/pay")
    assert paid.status_code == 200, paid.get_json()
    body = paid.get_json()
    assert body["status"] == "paid" and body["paid_at"] is not None
    assert body["paid_by"] == customer.user["id"]
    assert body["amount"] == "500.00"
    assert paid.headers["ETag"] == f'"{fine["id"]}.paid"'

    again = customer.post(f"/api/v1/fines/{fine['id']}/pay")
    assert again.status_code == 409
    assert again.content_type == "application/problem+json"
    assert customer.get(f"/api/v1/fines/{fine['id']}").get_json()["paid_at"] == body["paid_at"]

    [event] = outbox("fine.paid")
    assert event.subject == fine["id"] and event.data["paid_by"] == customer.user["id"]


def test_staff_can_pay_any_fine(app, staff):
    fine = issue(staff, plate="NOCAR000").get_json()
    response = staff.post(f"/api/v1/fines/{fine['id']}/pay")
    assert response.status_code == 200
    assert response.get_json()["paid_by"] == staff.user["id"]
    assert staff.post(f"/api/v1/fines/{fine['id']}/pay").status_code == 409


def test_another_customers_fine_is_404_to_read_and_to_pay(app, staff, customer, other_customer):
    add_car(staff, other_customer, "C789EF50")
    theirs = issue(staff, plate="C789EF50").get_json()
    orphan = issue(staff, plate="NOCAR000").get_json()
    for fine in (theirs, orphan):
        assert customer.get(f"/api/v1/fines/{fine['id']}").status_code == 404
        response = customer.post(f"/api/v1/fines/{fine['id']}/pay")
        assert response.status_code == 404
        assert response.content_type == "application/problem+json"
    # Nothing changed: the owner can still pay theirs.
    assert staff.get(f"/api/v1/fines/{theirs['id']}").get_json()["status"] == "unpaid"
    assert other_customer.post(f"/api/v1/fines/{theirs['id']}/pay").status_code == 200
    assert outbox("fine.paid")[0].data["paid_by"] == other_customer.user["id"]


def test_unknown_fine_is_404(app, staff):
    assert staff.get("/api/v1/fines/00000000-0000-0000-0000-000000000000").status_code == 404
    assert staff.post("/api/v1/fines/not-a-uuid/pay").status_code == 404
    assert staff.get("/api/v1/fines/nul%00byte").status_code == 404  # not a 500 from PostgreSQL


def test_the_database_refuses_a_non_positive_amount(app, staff):
    """The schema gives the clear error; the CHECK makes it impossible anyway."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import IntegrityError

    from extensions import db
    from models.fines import Fine

    db.session.add(Fine(license_plate="A1", amount=Decimal("0.00"), reason="x", issued_at=datetime.now(UTC)))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_two_concurrent_payments_only_one_succeeds(app, staff, customer, backend):
    """Eight payers released at once by a barrier: exactly one UPDATE changes the row."""
    if backend != "real":
        pytest.skip("the race needs concurrent writers: PostgreSQL")
    from extensions import db
    from services import fines
    from services.errors import Conflict

    add_car(staff, customer, "A123BC77")
    fine_id = issue(staff, plate="A123BC77").get_json()["id"]
    payers = [fines.Viewer(customer.user["id"]), fines.Viewer(staff.user["id"], staff=True)] * 4
    barrier = threading.Barrier(len(payers))
    results: list[str] = []

    def pay(viewer):
        with app.app_context():
            try:
                barrier.wait(timeout=30)
                fines.pay_fine(viewer, fine_id)
                results.append("paid")
            except Conflict:
                results.append("conflict")
            except Exception as exc:  # noqa: BLE001 - any other outcome fails the test below
                results.append(repr(exc))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=pay, args=(viewer,)) for viewer in payers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["conflict"] * (len(payers) - 1) + ["paid"]
    assert len(outbox("fine.paid")) == 1
    assert staff.get(f"/api/v1/fines/{fine_id}").get_json()["status"] == "paid"


def test_fines_are_in_the_openapi_document(app, client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"/api/v1/fines", "/api/v1/fines/{fine_id}", "/api/v1/fines/{fine_id}/pay"} <= set(paths)
