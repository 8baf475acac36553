"""Cars: CRUD, validation, uniqueness, filters, paging, ETags, cache, events."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from extensions import cache, db
from models.messaging import OutboxMessage

_vins = (f"1HGCM82633A{n:06d}" for n in itertools.count(100000))


def car_body(**overrides):
    body = {"vin": next(_vins), "make": "Toyota", "model": "Camry", "year": 2020}
    body.update(overrides)
    return body


def create(staff, **overrides):
    response = staff.post("/api/v1/cars", json=car_body(**overrides))
    assert response.status_code == 201, response.get_json()
    return response


def test_create_read_update_delete(staff, customer):
    created = create(staff, license_plate="a123bc77", price="15000.5", color="red", mileage_km=1000)
    car = created.get_json()
    assert created.headers["Location"].endswith(f"/api/v1/cars/{car['id']}")
    assert car["license_plate"] == "A123BC77"
    assert car["price"] == "15000.50"
    assert car["status"] == "available"

    read = customer.get(f"/api/v1/cars/{car['id']}")
    assert read.status_code == 200
    assert read.get_json() == car
    assert read.headers["ETag"] == created.headers["ETag"]

    patched = staff.patch(f"/api/v1/cars/{car['id']}", json={"status": "in_service", "mileage_km": 1500})
    assert patched.status_code == 200
    assert patched.get_json()["status"] == "in_service"
    assert patched.headers["ETag"] != created.headers["ETag"]

    replaced = staff.put(f"/api/v1/cars/{car['id']}", json=car_body(vin=car["vin"], model="Corolla"))
    assert replaced.status_code == 200
    assert replaced.get_json()["model"] == "Corolla"
    assert replaced.get_json()["license_plate"] is None  # PUT replaces what it leaves out

    assert staff.delete(f"/api/v1/cars/{car['id']}").status_code == 204
    assert customer.get(f"/api/v1/cars/{car['id']}").status_code == 404
    assert staff.delete(f"/api/v1/cars/{car['id']}").status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vin", "1HGCM82633A00001"),  # 16 characters
        ("vin", "1HGCM82633A00000I"),  # I is not allowed
        ("vin", "1HGCM82633A00000O"),
        ("vin", "1HGCM82633A00000Q"),
        ("year", 1885),
        ("year", datetime.now(UTC).year + 2),
        ("year", "2020"),
        ("status", "stolen"),
        ("mileage_km", -1),
        ("price", "-1.00"),
        ("owner_id", "not-a-uuid"),
        ("unexpected", "field"),
    ],
)
def test_invalid_fields_are_422_with_the_field_named(staff, field, value):
    response = staff.post("/api/v1/cars", json=car_body(**{field: value}))
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert field in response.get_json()["errors"]


def test_year_next_year_is_accepted(staff):
    create(staff, year=datetime.now(UTC).year + 1)


def test_unknown_owner_is_422(staff):
    nobody = "00000000-0000-4000-8000-000000000000"
    response = staff.post("/api/v1/cars", json=car_body(owner_id=nobody))
    assert response.status_code == 422
    assert "owner_id" in response.get_json()["errors"]
    car = create(staff).get_json()
    changed = staff.patch(f"/api/v1/cars/{car['id']}", json={"owner_id": nobody, "color": "red"})
    assert changed.status_code == 422 and "owner_id" in changed.get_json()["errors"]
    assert staff.get(f"/api/v1/cars/{car['id']}").get_json()["color"] is None  # nothing applied


def test_duplicate_vin_and_plate_are_409(staff):
    first = create(staff, license_plate="X001XX").get_json()
    assert staff.post("/api/v1/cars", json=car_body(vin=first["vin"])).status_code == 409
    assert staff.post("/api/v1/cars", json=car_body(license_plate="x001xx")).status_code == 409
    other = create(staff).get_json()
    clash = staff.patch(f"/api/v1/cars/{other['id']}", json={"license_plate": "X001XX"})
    assert clash.status_code == 409


def test_a_car_added_costs_its_two_inserts_and_nothing_else(app, staff, customer, monkeypatch):
    """The constraints check owner, VIN and plate: a write that succeeds runs no SELECT,
    and the request builds no schema (one instance per route, blueprints.common)."""
    from sqlalchemy import event

    from schemas.cars import CarSchema

    built: list[object] = []
    original_init = CarSchema.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(CarSchema, "__init__", counting_init)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        create(staff, owner_id=customer.user["id"], license_plate="B002BB")
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert [s for s in statements if s in ("SELECT", "INSERT", "UPDATE")] == ["INSERT", "INSERT"]
    assert built == []


def test_database_rejects_duplicate_vin_even_without_the_check(app, staff):
    """The UNIQUE constraint is the last word when two requests race past the check."""
    from sqlalchemy.exc import IntegrityError

    from models.cars import Car

    vin = create(staff).get_json()["vin"]
    db.session.add(Car(vin=vin, make="A", model="B", year=2000))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_customers_read_but_only_staff_write(customer, anonymous, staff):
    car = create(staff).get_json()
    assert customer.post("/api/v1/cars", json=car_body()).status_code == 403
    assert customer.patch(f"/api/v1/cars/{car['id']}", json={"color": "blue"}).status_code == 403
    assert customer.delete(f"/api/v1/cars/{car['id']}").status_code == 403
    assert anonymous.get("/api/v1/cars").status_code == 401
    assert customer.get("/api/v1/cars").status_code == 200


def test_if_match_mismatch_is_412_and_changes_nothing(staff):
    created = create(staff)
    car, tag = created.get_json(), created.headers["ETag"]
    ok = staff.patch(f"/api/v1/cars/{car['id']}", json={"color": "blue"}, headers={"If-Match": tag})
    assert ok.status_code == 200
    stale = staff.patch(f"/api/v1/cars/{car['id']}", json={"color": "green"}, headers={"If-Match": tag})
    assert stale.status_code == 412
    assert stale.content_type == "application/problem+json"
    assert staff.get(f"/api/v1/cars/{car['id']}").get_json()["color"] == "blue"
    assert staff.delete(f"/api/v1/cars/{car['id']}", headers={"If-Match": tag}).status_code == 412
    assert staff.delete(f"/api/v1/cars/{car['id']}", headers={"If-Match": ok.headers["ETag"]}).status_code == 204


def test_filters_sort_and_paging(staff, customer):
    for index, (make, year, status) in enumerate(
        [
            ("Toyota", 2010, "available"),
            ("Toyota", 2015, "sold"),
            ("BMW", 2018, "available"),
            ("Lada", 2001, "in_service"),
        ]
    ):
        create(staff, make=make, model=f"M{index}", year=year, status=status, license_plate=f"P{index}")

    def listing(query):
        response = customer.get(f"/api/v1/cars?{query}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    assert listing("make=toyota")["total"] == 2
    assert [car["year"] for car in listing("sort=-year")["items"]] == [2018, 2015, 2010, 2001]
    assert [car["year"] for car in listing("year_from=2010&year_to=2016&sort=year")["items"]] == [2010, 2015]
    assert listing("status=sold")["items"][0]["make"] == "Toyota"
    assert listing("q=p3")["items"][0]["make"] == "Lada"
    page = listing("sort=year&page=2&size=3")
    assert (page["page"], page["size"], page["total"], len(page["items"])) == (2, 3, 4, 1)
    assert page["items"][0]["year"] == 2018


@pytest.mark.parametrize("query", ["page=0", "size=0", "size=101", "page=x", "sort=vin", "status=stolen"])
def test_bad_list_arguments_are_422(customer, query):
    response = customer.get(f"/api/v1/cars?{query}")
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"


def test_order_is_stable_under_equal_sort_keys(staff, customer):
    ids = {create(staff, year=2000).get_json()["id"] for _ in range(5)}
    first = [car["id"] for car in customer.get("/api/v1/cars?sort=year&size=3").get_json()["items"]]
    second = [car["id"] for car in customer.get("/api/v1/cars?sort=year&size=3&page=2").get_json()["items"]]
    assert set(first) | set(second) == ids
    assert not set(first) & set(second)


def test_no_read_after_a_write_returns_the_old_value(staff, customer):
    car = create(staff).get_json()
    url = f"/api/v1/cars/{car['id']}"
    assert customer.get(url).get_json()["color"] is None  # now cached
    assert customer.get("/api/v1/cars").get_json()["items"][0]["color"] is None  # list cached too
    staff.patch(url, json={"color": "black"})
    assert customer.get(url).get_json()["color"] == "black"
    assert customer.get("/api/v1/cars").get_json()["items"][0]["color"] == "black"
    staff.delete(url)
    assert customer.get(url).status_code == 404
    assert customer.get("/api/v1/cars").get_json()["total"] == 0


def test_a_write_in_one_process_is_seen_by_another(app, staff):
    """Two app instances share only the cache and database, like two gunicorn workers."""
    from app import create_app
    from tests.conftest import Api

    car = create(staff).get_json()
    url = f"/api/v1/cars/{car['id']}"
    other_worker = create_app({key: app.config[key] for key in app.config if key.isupper()})
    reader = Api(other_worker.test_client(), staff.token)
    with other_worker.app_context():
        assert reader.get(url).get_json()["color"] is None
    staff.patch(url, json={"color": "white"})
    with other_worker.app_context():
        assert reader.get(url).get_json()["color"] == "white"


def test_a_read_that_loaded_before_a_write_cannot_store_stale_data(app, staff):
    """The race plain "delete after commit" loses: load old, write commits, store old."""
    from services import cache
    from services.cars import car_key

    car = create(staff).get_json()
    stale = {**car, "color": "stale"}
    staff.patch(f"/api/v1/cars/{car['id']}", json={"color": "fresh"})  # commit + invalidation
    assert cache.cached(car_key(car["id"]), lambda: stale) == stale  # the late reader's own answer
    assert staff.get(f"/api/v1/cars/{car['id']}").get_json()["color"] == "fresh"


def test_between_the_commit_and_the_invalidation_nothing_old_can_be_read(app, staff, customer):
    """What another process (or the consumer's reader) finds right after the commit,
    before the invalidation that follows it: tombstones, so it reads the database."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from services.cache import TOMBSTONE
    from services.cars import LIST_NAMESPACE, car_key

    car = create(staff).get_json()
    url = f"/api/v1/cars/{car['id']}"
    assert customer.get(url).status_code == 200 and customer.get("/api/v1/cars").status_code == 200  # cached
    observed = []

    def between(_session: Session) -> None:
        observed.append((cache.get(car_key(car["id"])), cache.get(f"{LIST_NAMESPACE}:generation")))

    event.listen(Session, "after_commit", between, insert=True)  # before the cache's own listener
    try:
        assert staff.patch(url, json={"color": "black"}).status_code == 200
    finally:
        event.remove(Session, "after_commit", between)
    assert observed[0] == (TOMBSTONE, TOMBSTONE)
    assert customer.get(url).get_json()["color"] == "black"
    assert customer.get("/api/v1/cars").get_json()["items"][0]["color"] == "black"


def test_a_savepoint_invalidates_nothing_before_the_transaction_commits(app):
    """The consumer applies each message in a savepoint and commits the batch once."""
    from services import cache as carhub_cache

    cache.set("item", "old")
    reader_generation = carhub_cache.cached_in_generation("list", "page-1", lambda: "old list")
    with db.session.begin_nested():
        carhub_cache.invalidate_after_commit("item")
        carhub_cache.bump_after_commit("list")
    # Released, not committed: another process still reads the old rows, and must not
    # be able to store them under a fresh generation.
    assert cache.get("item") == "old"
    assert carhub_cache.cached_in_generation("list", "page-1", lambda: "new list") == reader_generation
    db.session.commit()
    assert cache.get("item") == carhub_cache.TOMBSTONE
    assert carhub_cache.cached_in_generation("list", "page-1", lambda: "new list") == "new list"


def test_a_savepoint_rolled_back_keeps_the_invalidations_asked_before_it(app):
    from services import cache as carhub_cache

    cache.set("applied", "old")
    cache.set("undone", "old")
    with db.session.begin_nested():
        carhub_cache.invalidate_after_commit("applied")
    savepoint = db.session.begin_nested()
    carhub_cache.invalidate_after_commit("undone")
    savepoint.rollback()
    db.session.commit()
    assert cache.get("applied") == carhub_cache.TOMBSTONE


def test_a_rolled_back_transaction_invalidates_nothing_later(app):
    from services import cache as carhub_cache

    cache.set("item", "old")
    with db.session.begin_nested():
        carhub_cache.invalidate_after_commit("item")
    db.session.rollback()
    db.session.commit()  # an empty transaction afterwards applies nothing left over
    assert cache.get("item") == "old"


def test_changes_are_recorded_as_events_in_the_same_transaction(app, staff):
    car = create(staff, owner_id=None).get_json()
    staff.patch(f"/api/v1/cars/{car['id']}", json={"color": "red"})
    staff.patch(f"/api/v1/cars/{car['id']}", json={"color": "red"})  # no change, no event
    staff.delete(f"/api/v1/cars/{car['id']}")
    staff.post("/api/v1/cars", json=car_body(vin=car["vin"] + "X"))  # rejected, no event
    rows = db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at)).all()
    assert [row.type for row in rows] == ["car.created", "car.updated", "car.deleted"]
    assert all(row.subject == car["id"] for row in rows)
    assert rows[1].data["changed"] == ["color"]
    assert rows[0].data["vin"] == car["vin"]
