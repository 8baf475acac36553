"""Stock: commands over HTTP and from the broker, movements, reads, applied once, never negative.

No broker here: ``drain_outbox`` and ``deliver`` run messages through the real inbox
unit of work and handler table, on SQLite and on PostgreSQL + Redis.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from extensions import db
from models.messaging import OutboxMessage
from models.notifications import Notification
from models.stock import StockLedgerEntry, Warehouse
from services import cache, stock
from services.errors import InvalidMessage
from services.handlers import Event
from tests.messaging_helpers import deliver, drain_outbox
from tests.stock_helpers import (
    COMMANDS,
    STOCK_QUEUE,
    WEBHOOK,
    bare_command,
    command,
    command_statuses,
    ledger_count,
    level_url,
    levels,
    movement_cloudevent,
    movement_event,
    outbox_types,
    qty_of,
)

# --- commands over HTTP ---------------------------------------------------------------------


def test_main_warehouse_exists_from_the_start(app):
    assert db.session.get(Warehouse, "main") is not None


def test_increase_10_then_decrease_4_leaves_6(staff):
    first = command(staff, "increase", "SKU123", 10)
    assert first.status_code == 202
    body = first.get_json()
    assert body["status"] == "accepted" and body["command_id"]
    assert first.headers["Location"].endswith(f"/api/v1/stock/commands/{body['command_id']}")
    # Accepted, not applied: the consumer applies it.
    pending = staff.get(f"{COMMANDS}/{body['command_id']}").get_json()
    assert pending["status"] == "pending" and pending["applied_at"] is None
    assert qty_of(staff, "SKU123") == 0

    drain_outbox()
    assert qty_of(staff, "SKU123") == 10
    second = command(staff, "decrease", "SKU123", 4).get_json()
    drain_outbox()
    assert qty_of(staff, "SKU123") == 6

    done = staff.get(f"{COMMANDS}/{second['command_id']}").get_json()
    assert done["status"] == "applied" and done["applied_at"] is not None
    assert {k: done[k] for k in ("action", "sku", "qty", "warehouse_id")} == {
        "action": "decrease",
        "sku": "SKU123",
        "qty": 4,
        "warehouse_id": "main",
    }
    assert outbox_types() == ["stock.command.increase", "stock.changed", "stock.command.decrease", "stock.changed"]
    entries = db.session.scalars(select(StockLedgerEntry).order_by(StockLedgerEntry.created_at)).all()
    assert [(e.delta, e.qty_after, e.reason, e.actor) for e in entries] == [
        (10, 10, "increase", staff.user["id"]),
        (-4, 6, "decrease", staff.user["id"]),
    ]
    assert entries[1].command_id == second["command_id"]


def test_decrease_above_stock_is_rejected_and_changes_nothing(staff):
    command(staff, "increase", "SKU-R", 5)
    drain_outbox()
    rejected_id = command(staff, "decrease", "SKU-R", 6).get_json()["command_id"]
    drain_outbox()  # also carries stock.command.rejected to carhub.stock (a no-op) and to notifications

    assert qty_of(staff, "SKU-R") == 5
    status = staff.get(f"{COMMANDS}/{rejected_id}").get_json()
    assert status["status"] == "rejected" and status["reason"] == "insufficient_stock"
    assert status["applied_at"] is None
    assert outbox_types().count("stock.command.rejected") == 1
    assert outbox_types().count("stock.changed") == 1  # only the increase
    assert ledger_count(command_id=rejected_id) == 0
    # The staff user who issued it is told.
    notes = db.session.scalars(select(Notification).where(Notification.user_id == staff.user["id"])).all()
    assert [(n.kind, n.reference) for n in notes] == [("stock.command.rejected", rejected_id)]


def test_decrease_of_a_never_stocked_sku_is_rejected(staff):
    command_id = command(staff, "decrease", "NOPE", 1).get_json()["command_id"]
    drain_outbox()
    assert staff.get(f"{COMMANDS}/{command_id}").get_json()["status"] == "rejected"
    assert levels() == {}


def test_increase_of_an_unknown_sku_in_a_new_warehouse_creates_both(staff):
    command(staff, "increase", "NEW-SKU", 7, warehouse_id="north-1")
    drain_outbox()
    assert qty_of(staff, "NEW-SKU", "north-1") == 7
    assert db.session.get(Warehouse, "north-1") is not None
    assert levels() == {("north-1", "NEW-SKU"): 7}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "increase", "sku": "A", "qty": 0}, "qty"),
        ({"action": "increase", "sku": "A", "qty": -3}, "qty"),
        ({"action": "increase", "sku": "A", "qty": 1.5}, "qty"),
        ({"action": "increase", "sku": "A", "qty": "3"}, "qty"),
        ({"action": "increase", "sku": "A", "qty": True}, "qty"),
        ({"action": "increase", "sku": "A"}, "qty"),
        ({"action": "grow", "sku": "A", "qty": 1}, "action"),
        ({"action": "increase", "sku": "", "qty": 1}, "sku"),
        ({"action": "increase", "sku": "has space", "qty": 1}, "sku"),
        ({"action": "increase", "sku": "x" * 65, "qty": 1}, "sku"),
        ({"action": "increase", "sku": "A", "qty": 1, "warehouse_id": ""}, "warehouse_id"),
        ({"action": "increase", "sku": "A", "qty": 1, "colour": "red"}, "colour"),
    ],
)
def test_invalid_commands_are_422_with_field_errors(staff, body, field):
    response = staff.post(COMMANDS, json=body)
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert outbox_types() == []


def test_commands_are_for_staff(customer, anonymous):
    assert command(customer, "increase", "A", 1).status_code == 403
    assert command(anonymous, "increase", "A", 1).status_code == 401
    assert outbox_types() == []


def test_the_same_command_id_twice_is_applied_once(staff):
    command_id = str(uuid.uuid4())
    first = command(staff, "increase", "SKU-ONCE", 3, command_id=command_id)
    again = command(staff, "increase", "SKU-ONCE", 3, command_id=command_id)
    assert first.status_code == again.status_code == 202
    assert first.get_json() == again.get_json() == {"status": "accepted", "command_id": command_id}
    assert outbox_types() == ["stock.command.increase"]

    delivered = drain_outbox()
    # The same command arriving again over the broker (another message id) changes nothing.
    assert deliver(STOCK_QUEUE, bare_command("increase", "SKU-ONCE", 3, command_id=command_id, message_id="m-2"))
    # And the very same message redelivered is recognised by the inbox.
    assert deliver(STOCK_QUEUE, delivered[0]) is False
    assert qty_of(staff, "SKU-ONCE") == 3
    assert ledger_count(command_id=command_id) == 1


def test_a_command_id_reused_with_other_values_is_409(staff):
    command_id = str(uuid.uuid4())
    command(staff, "increase", "SKU-C", 3, command_id=command_id)
    response = command(staff, "increase", "SKU-C", 4, command_id=command_id)
    assert response.status_code == 409
    assert outbox_types() == ["stock.command.increase"]


def test_idempotency_key_returns_the_first_result_and_changes_nothing(staff):
    headers = {"Idempotency-Key": "retry-me-123"}
    first = command(staff, "increase", "SKU-IK", 2, headers=headers)
    second = command(staff, "increase", "SKU-IK", 2, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.get_json() == second.get_json()
    assert outbox_types() == ["stock.command.increase"]
    drain_outbox()
    third = command(staff, "increase", "SKU-IK", 2, headers=headers)
    assert third.get_json() == first.get_json()
    drain_outbox()
    assert qty_of(staff, "SKU-IK") == 2
    assert command_statuses() == {"applied": 1}

    other_body = command(staff, "increase", "SKU-IK", 5, headers=headers)
    assert other_body.status_code == 422
    assert "Idempotency-Key" in other_body.get_json()["errors"]
    # Another key is another command.
    command(staff, "increase", "SKU-IK", 2, headers={"Idempotency-Key": "another"})
    drain_outbox()
    assert qty_of(staff, "SKU-IK") == 4


def test_idempotency_keys_belong_to_their_user(client, staff):
    from tests.conftest import make_user

    other_staff = make_user(client, "staff", name="Other Staff")
    headers = {"Idempotency-Key": "shared-key"}
    one = command(staff, "increase", "SKU-U", 1, headers=headers).get_json()
    two = command(other_staff, "increase", "SKU-U", 1, headers=headers).get_json()
    assert one["command_id"] != two["command_id"]
    drain_outbox()
    assert qty_of(staff, "SKU-U") == 2


def test_command_status_unknown_is_404_and_staff_only(staff, customer):
    assert staff.get(f"{COMMANDS}/{uuid.uuid4()}").status_code == 404
    command_id = command(staff, "increase", "S", 1).get_json()["command_id"]
    assert customer.get(f"{COMMANDS}/{command_id}").status_code == 403


# --- commands from the broker ------------------------------------------------------------------


def test_bare_commands_from_outside_are_applied_once(staff):
    increase = bare_command("increase", "SKU123", 10, message_id="amqp-1")
    assert deliver(STOCK_QUEUE, increase) is True
    assert deliver(STOCK_QUEUE, increase) is False  # redelivered
    assert deliver(STOCK_QUEUE, bare_command("decrease", "SKU123", 4, command_id="ext-7")) is True
    assert deliver(STOCK_QUEUE, bare_command("decrease", "SKU123", 4, command_id="ext-7", message_id="other"))
    assert qty_of(staff, "SKU123") == 6
    # A bare command without command_id is known by its message id.
    status = staff.get(f"{COMMANDS}/amqp-1").get_json()
    assert status["status"] == "applied" and status["qty"] == 10
    assert staff.get(f"{COMMANDS}/ext-7").get_json()["status"] == "applied"
    entry = db.session.scalar(select(StockLedgerEntry).where(StockLedgerEntry.command_id == "ext-7"))
    assert entry.actor == "external" and entry.message_id == "ext-7"


def test_a_bare_decrease_below_zero_is_rejected_not_dead_lettered(staff):
    deliver(STOCK_QUEUE, bare_command("increase", "B", 1))
    assert deliver(STOCK_QUEUE, bare_command("decrease", "B", 2, command_id="too-many")) is True
    assert staff.get(f"{COMMANDS}/too-many").get_json()["reason"] == "insufficient_stock"
    assert qty_of(staff, "B") == 1
    rejected = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "stock.command.rejected"))
    assert rejected.data["command_id"] == "too-many" and rejected.data["issued_by"] is None
    drain_outbox()  # nobody to notify, and carhub.stock ignores its own rejection


@pytest.mark.parametrize(
    "event",
    [
        bare_command("increase", "A", "ten"),
        bare_command("increase", "A", 0),
        bare_command("increase", "A", 2.5),
        bare_command("increase", "", 1),
        Event(id="mismatch", type="stock.command.increase", data={"action": "decrease", "sku": "A", "qty": 1}),
        bare_command("increase", "A", 1, warehouse_id=42),
    ],
    ids=["qty-text", "qty-zero", "qty-float", "no-sku", "action-vs-key", "bad-warehouse"],
)
def test_invalid_bare_commands_raise_invalid_message_and_change_nothing(app, event):
    with pytest.raises(InvalidMessage):
        deliver(STOCK_QUEUE, event)
    assert levels() == {} and command_statuses() == {}
    # Nothing was recorded as consumed: the runtime dead-letters it instead.
    assert deliver(STOCK_QUEUE, bare_command("increase", "A", 1, message_id=event.id)) is True


def test_unknown_fields_in_messages_are_ignored(staff):
    event = bare_command("increase", "TOL", 3, note="from the ERP", priority=5)
    assert deliver(STOCK_QUEUE, event) is True
    assert qty_of(staff, "TOL") == 3


# --- movements ---------------------------------------------------------------------------------


def _movement_state(staff, movement_id):
    movement = staff.get(f"/api/v1/movements/{movement_id}").get_json()
    return {"movement": movement, "levels": levels(), "ledger": ledger_count()}


def _stock(warehouse_id, sku, qty):
    deliver(STOCK_QUEUE, bare_command("increase", sku, qty, warehouse_id=warehouse_id))


def test_a_departure_and_an_arrival_make_one_movement(staff):
    _stock("WH-A", "P-1", 150)
    departure = movement_cloudevent("departure", "mv-1", "WH-A", "P-1", 100, timestamp="2025-02-18T12:00:00Z")
    in_transit = deliver(STOCK_QUEUE, movement_event(departure))
    assert in_transit
    movement = staff.get("/api/v1/movements/mv-1").get_json()
    assert movement["status"] == "in_transit" and movement["destination"] is None
    assert movement["transit_seconds"] is None and movement["quantity_difference"] is None

    arrival = movement_cloudevent("arrival", "mv-1", "WH-B", "P-1", 98, timestamp="2025-02-18T14:30:00+00:00")
    assert deliver(STOCK_QUEUE, movement_event(arrival))
    movement = staff.get("/api/v1/movements/mv-1").get_json()
    assert movement == {
        "movement_id": "mv-1",
        "sku": "P-1",
        "source": {"warehouse_id": "WH-A", "at": "2025-02-18T12:00:00+00:00", "quantity": 100, "status": "applied"},
        "destination": {
            "warehouse_id": "WH-B",
            "at": "2025-02-18T14:30:00+00:00",
            "quantity": 98,
            "status": "applied",
        },
        "status": "completed",
        "transit_seconds": 9000.0,
        "quantity_difference": -2,
    }
    assert levels() == {("WH-A", "P-1"): 50, ("WH-B", "P-1"): 98}
    assert qty_of(staff, "P-1", "WH-B") == 98


def test_a_movement_side_is_applied_once_whatever_its_message_id(staff):
    _stock("WH-A", "P-2", 10)
    departure = movement_cloudevent("departure", "mv-2", "WH-A", "P-2", 4)
    assert deliver(STOCK_QUEUE, movement_event(departure)) is True
    assert deliver(STOCK_QUEUE, movement_event(departure)) is False  # redelivered: the inbox
    resent = {**departure, "id": str(uuid.uuid4())}  # re-sent by the warehouse: the movement row
    assert deliver(STOCK_QUEUE, movement_event(resent)) is True
    assert levels() == {("WH-A", "P-2"): 6}
    assert ledger_count(movement_id="mv-2") == 1


def test_an_arrival_before_its_departure_still_pairs_up(staff):
    _stock("WH-A", "P-3", 5)
    deliver(STOCK_QUEUE, movement_event(movement_cloudevent("arrival", "mv-3", "WH-B", "P-3", 5)))
    deliver(STOCK_QUEUE, movement_event(movement_cloudevent("departure", "mv-3", "WH-A", "P-3", 5)))
    movement = staff.get("/api/v1/movements/mv-3").get_json()
    assert movement["status"] == "completed" and movement["quantity_difference"] == 0
    assert levels() == {("WH-A", "P-3"): 0, ("WH-B", "P-3"): 5}


def test_a_departure_beyond_stock_is_rejected_whole(staff):
    _stock("WH-A", "P-4", 10)
    assert deliver(STOCK_QUEUE, movement_event(movement_cloudevent("departure", "mv-4", "WH-A", "P-4", 11))) is True
    assert levels() == {("WH-A", "P-4"): 10}
    movement = staff.get("/api/v1/movements/mv-4").get_json()
    assert movement["source"]["status"] == "rejected" and movement["status"] == "in_transit"
    rejected = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "stock.command.rejected"))
    assert rejected.data["movement_id"] == "mv-4" and rejected.data["reason"] == "insufficient_stock"
    drain_outbox()


def test_time_as_epoch_milliseconds_when_data_has_no_timestamp(staff):
    departure = movement_cloudevent("arrival", "mv-5", "WH-C", "P-5", 1)
    del departure["data"]["timestamp"]
    departure["time"] = 1737439421623
    response = staff.post(WEBHOOK, json=departure)
    assert response.status_code == 202
    drain_outbox()
    movement = staff.get("/api/v1/movements/mv-5").get_json()
    assert movement["destination"]["at"] == "2025-01-21T06:03:41.623000+00:00"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(quantity=0), "quantity"),
        (lambda d: d.update(quantity="many"), "quantity"),
        (lambda d: d.pop("product_id"), "product_id"),
        (lambda d: d.update(event="teleport"), "event"),
        (lambda d: d.update(event="arrival"), "arrived as"),
        (lambda d: d.update(timestamp="yesterday"), "timestamp"),
    ],
    ids=["zero", "text", "no-sku", "unknown-event", "event-vs-key", "bad-time"],
)
def test_invalid_movements_raise_invalid_message(app, change, reason):
    cloudevent = movement_cloudevent("departure", "mv-bad", "WH-A", "P-X", 3)
    event = movement_event(cloudevent)
    change(cloudevent["data"])
    with pytest.raises(InvalidMessage, match=reason):
        deliver(STOCK_QUEUE, event)
    assert levels() == {}


def test_a_movement_side_of_another_sku_is_invalid(app):
    _stock("WH-A", "P-6", 3)
    deliver(STOCK_QUEUE, movement_event(movement_cloudevent("departure", "mv-6", "WH-A", "P-6", 3)))
    with pytest.raises(InvalidMessage, match="sku"):
        deliver(STOCK_QUEUE, movement_event(movement_cloudevent("arrival", "mv-6", "WH-B", "OTHER", 3)))
    assert levels() == {("WH-A", "P-6"): 0}


def test_the_webhook_and_the_broker_give_the_same_state(app, staff):
    from tests.conftest import _empty_tables

    def scenario(send):
        _stock("WH-A", "P-7", 100)
        departure = movement_cloudevent("departure", "mv-7", "WH-A", "P-7", 60, event_id="ce-dep")
        arrival = movement_cloudevent(
            "arrival", "mv-7", "WH-B", "P-7", 59, timestamp="2025-02-18T13:12:56Z", event_id="ce-arr"
        )
        for cloudevent in (departure, arrival, departure, arrival):  # each published twice
            send(cloudevent)
        return _movement_state(staff, "mv-7")

    def by_broker(cloudevent):
        deliver(STOCK_QUEUE, movement_event(cloudevent))

    def by_webhook(cloudevent):
        response = staff.post(WEBHOOK, json=cloudevent)
        assert response.status_code == 202
        assert response.get_json() == {"status": "accepted", "id": cloudevent["id"], "movement_id": "mv-7"}
        drain_outbox()

    over_broker = scenario(by_broker)
    db.session.rollback()  # end the test's read transaction, or TRUNCATE waits for it
    _empty_tables()
    cache.cache.clear()
    over_webhook = scenario(by_webhook)
    assert over_webhook == over_broker
    assert over_broker["levels"] == {("WH-A", "P-7"): 40, ("WH-B", "P-7"): 59}
    assert over_broker["movement"]["transit_seconds"] == 3600.0
    assert over_broker["movement"]["quantity_difference"] == -1
    # The webhook queued each CloudEvent once, under its own id.
    queued = db.session.scalars(select(OutboxMessage.id).where(OutboxMessage.type.like("stock.movement.%"))).all()
    assert sorted(queued) == ["ce-arr", "ce-dep"]
    ledger_actor = db.session.scalar(select(StockLedgerEntry.actor).where(StockLedgerEntry.movement_id == "mv-7"))
    assert ledger_actor == "WH-3322"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.update(type="something.else"), "type"),
        (lambda e: e.pop("id"), "id"),
        (lambda e: e["data"].update(quantity=-1), "data.quantity"),
        (lambda e: e.update(data="nope"), "data._schema"),
    ],
)
def test_the_webhook_validates_the_cloudevent(staff, change, field):
    cloudevent = movement_cloudevent("arrival", "mv-8", "WH-A", "P-8", 1)
    change(cloudevent)
    response = staff.post(WEBHOOK, json=cloudevent)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert outbox_types() == []


def test_the_webhook_is_for_staff(customer):
    response = customer.post(WEBHOOK, json=movement_cloudevent("arrival", "mv-9", "WH-A", "P-9", 1))
    assert response.status_code == 403


def test_unknown_movement_is_404(staff, customer):
    assert staff.get("/api/v1/movements/nope").status_code == 404
    assert customer.get("/api/v1/movements/nope").status_code == 403


# --- reads ---------------------------------------------------------------------------------------


def test_read_then_arrival_of_50_then_read_shows_it_at_once(customer):
    first = customer.get(level_url("main", "P-50"))
    assert first.status_code == 200
    assert first.get_json() == {"warehouse_id": "main", "sku": "P-50", "qty": 0, "updated_at": None}
    # The read was cached (so the next read must be invalidated to be right).
    assert cache.cache.get(stock.level_key("main", "P-50"))["qty"] == 0
    listed = customer.get("/api/v1/stock/items?sku=P-50").get_json()
    assert listed["total"] == 0

    deliver(STOCK_QUEUE, movement_event(movement_cloudevent("arrival", "mv-50", "main", "P-50", 50)))

    after = customer.get(level_url("main", "P-50")).get_json()
    assert after["qty"] == 50 and after["updated_at"] is not None
    listed = customer.get("/api/v1/stock/items?sku=P-50").get_json()
    assert [(i["warehouse_id"], i["sku"], i["qty"]) for i in listed["items"]] == [("main", "P-50", 50)]


def test_stock_items_filter_and_page_in_a_stable_order(customer):
    for warehouse_id, sku, qty in [("b", "X", 1), ("a", "Y", 2), ("a", "X", 3), ("main", "X", 4)]:
        _stock(warehouse_id, sku, qty)
    everything = customer.get("/api/v1/stock/items?size=2").get_json()
    assert everything["total"] == 4 and everything["page"] == 1 and everything["size"] == 2
    assert [(i["warehouse_id"], i["sku"]) for i in everything["items"]] == [("a", "X"), ("a", "Y")]
    page_two = customer.get("/api/v1/stock/items?size=2&page=2").get_json()
    assert [(i["warehouse_id"], i["sku"]) for i in page_two["items"]] == [("b", "X"), ("main", "X")]
    by_sku = customer.get("/api/v1/stock/items?sku=X").get_json()
    assert [i["qty"] for i in by_sku["items"]] == [3, 1, 4]
    by_warehouse = customer.get("/api/v1/stock/items?warehouse_id=a").get_json()
    assert by_warehouse["total"] == 2
    assert customer.get("/api/v1/stock/items?size=101").status_code == 422


def test_reads_need_a_user_and_a_valid_id(customer, anonymous):
    assert anonymous.get(level_url("main", "A")).status_code == 401
    assert anonymous.get("/api/v1/stock/items").status_code == 401
    assert customer.get(level_url("main", "x" * 65)).status_code == 422


def test_ids_with_colons_slashes_and_full_length_are_kept_apart(staff):
    """Cache keys cannot collide (("a:b", "c") vs ("a", "b:c")), a sku may hold '/', and
    64-character warehouse and sku ids fit everywhere they are written."""
    assert qty_of(staff, "b:c", "a") == 0  # cached zero under ("a", "b:c")
    command(staff, "increase", "c", 5, warehouse_id="a:b")
    command(staff, "increase", "part/7", 2)
    long_warehouse, long_sku = "W" * 64, "S" * 64
    command(staff, "increase", long_sku, 1, warehouse_id=long_warehouse)
    drain_outbox()
    assert qty_of(staff, "c", "a:b") == 5
    assert qty_of(staff, "b:c", "a") == 0
    assert qty_of(staff, "part/7") == 2
    assert qty_of(staff, long_sku, long_warehouse) == 1


def test_the_webhook_id_must_fit_the_outbox(staff):
    cloudevent = movement_cloudevent("arrival", "mv-long", "WH-A", "P-L", 1, event_id="x" * 65)
    response = staff.post(WEBHOOK, json=cloudevent)
    assert response.status_code == 422 and "id" in response.get_json()["errors"]
