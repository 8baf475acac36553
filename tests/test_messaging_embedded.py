"""Embedded mode (no RABBITMQ_URL): the outbox table is the queue, with the same rules.

Runs on both backends of the ``app`` fixture: SQLite, and PostgreSQL without a broker.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import OperationalError

from consumer import PERMANENT, handle
from extensions import db
from messaging.embedded import EmbeddedWorker
from messaging.topology import MAX_RETRIES
from models.base import utcnow
from models.messaging import DeadLetter, InboxMessage, LocalDelivery, OutboxMessage
from models.notifications import Notification
from services.errors import InvalidMessage

CAR = {"vin": "WVWZZZ1JZXW000001", "make": "VW", "model": "Golf", "year": 1999}


def count(model: type, *where: object) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def worker(app, handler=handle) -> EmbeddedWorker:
    return EmbeddedWorker(app, handler, PERMANENT)


def enqueue(queue: str, routing_key: str, body: str | bytes, message_id: str | None = None) -> None:
    db.session.add(
        LocalDelivery(
            queue=queue,
            routing_key=routing_key,
            body=body if isinstance(body, str) else body.decode(),
            message_id=message_id,
            available_at=utcnow(),
        )
    )
    db.session.commit()


def cloudevent(type_: str, data: object, event_id: str = "e-1") -> str:
    return json.dumps({"specversion": "1.0", "id": event_id, "source": "test", "type": type_, "data": data})


def test_an_event_exists_only_if_its_transaction_committed(app, staff, customer):
    created = staff.post("/api/v1/cars", json={**CAR, "owner_id": customer.user["id"]})
    assert created.status_code == 201
    duplicate = staff.post("/api/v1/cars", json={**CAR, "owner_id": customer.user["id"]})
    assert duplicate.status_code == 409
    assert count(OutboxMessage) == 1

    worker(app).run_until_idle()

    assert count(OutboxMessage, OutboxMessage.published_at.is_(None)) == 0
    assert count(InboxMessage) == 1
    notifications = customer.get("/api/v1/notifications").get_json()
    assert notifications["total"] == 1
    assert notifications["items"][0]["reference"] == created.get_json()["id"]


def test_the_same_message_delivered_twice_has_one_effect(app, staff, customer):
    staff.post("/api/v1/cars", json={**CAR, "owner_id": customer.user["id"]})
    embedded = worker(app)
    embedded.relay_pending()
    delivered = db.session.scalars(select(LocalDelivery)).one()
    body, message_id = delivered.body, delivered.message_id
    enqueue("carhub.notifications", "car.created", body, message_id)  # the redelivery

    embedded.run_until_idle()

    assert count(Notification) == 1
    assert count(InboxMessage) == 1
    assert count(LocalDelivery) == 0


def test_poison_messages_are_dead_lettered_with_the_reason_and_the_next_one_is_applied(app, staff, customer, admin):
    enqueue("carhub.notifications", "car.created", "this is not JSON")
    enqueue("carhub.notifications", "ticket.frobnicated", cloudevent("ticket.frobnicated", {}, "e-unknown"))
    enqueue("carhub.notifications", "car.created", cloudevent("car.created", ["not", "an", "object"], "e-list"))
    staff.post("/api/v1/cars", json={**CAR, "owner_id": customer.user["id"]})

    worker(app).run_until_idle()

    assert count(Notification) == 1
    letters = admin.get("/api/v1/admin/dead-letters").get_json()
    assert letters["total"] == 3
    reasons = {item["routing_key"] + ": " + item["reason"] for item in letters["items"]}
    assert any("not JSON" in reason for reason in reasons)
    assert any(reason.startswith("ticket.frobnicated: InvalidMessage") for reason in reasons)
    assert any("must be a JSON object" in reason for reason in reasons)
    assert {item["queue"] for item in letters["items"]} == {"carhub.notifications"}
    assert count(LocalDelivery) == 0
    assert customer.get("/api/v1/admin/dead-letters").status_code == 403


def test_transient_failures_retry_with_growing_delay_then_dead_letter_then_replay(app, admin):
    broken = {"on": True}
    applied: list[str] = []

    def flaky(queue, message):
        if broken["on"]:
            raise OperationalError("SELECT 1", {}, Exception("database is down"))
        applied.append(message.id)

    embedded = worker(app, flaky)
    enqueue("carhub.notifications", "car.created", cloudevent("car.created", {"id": "c-1"}, "e-flaky"))
    delays = []
    for attempt in range(1, MAX_RETRIES + 1):
        embedded.consume_pending()
        row = db.session.scalars(select(LocalDelivery)).one()
        assert row.attempts == attempt and "database is down" in row.last_error
        delays.append((row.available_at - utcnow()).total_seconds())
        # time travel instead of waiting for the delay
        db.session.execute(update(LocalDelivery).values(available_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert delays == sorted(delays) and delays[0] > 0
    embedded.consume_pending()  # the last try fails too: dead letter
    assert count(LocalDelivery) == 0
    letter = db.session.scalars(select(DeadLetter)).one()
    assert letter.reason.startswith(f"gave up after {MAX_RETRIES + 1} attempts")
    assert applied == []

    broken["on"] = False
    replayed = admin.post(f"/api/v1/admin/dead-letters/{letter.id}/replay")
    assert replayed.status_code == 202 and replayed.get_json()["replayed_at"]
    embedded.run_until_idle()
    assert applied == ["e-flaky"]
    assert count(InboxMessage, InboxMessage.message_id == "e-flaky") == 1
    assert admin.post("/api/v1/admin/dead-letters/nope/replay").status_code == 404


def test_dead_letters_cli_lists_and_replays(app):
    enqueue("carhub.notifications", "ticket.frobnicated", cloudevent("ticket.frobnicated", {}, "e-cli"))
    worker(app).run_until_idle()
    letter = db.session.scalars(select(DeadLetter)).one()
    runner = app.test_cli_runner()

    listed = runner.invoke(args=["dead-letters", "list"])
    assert listed.exit_code == 0 and letter.id in listed.output and "InvalidMessage" in listed.output

    replayed = runner.invoke(args=["dead-letters", "replay", letter.id])
    assert replayed.exit_code == 0, replayed.output
    assert count(OutboxMessage, OutboxMessage.destination == "carhub.notifications") == 1
    worker(app).run_until_idle()
    assert count(DeadLetter) == 2  # still unknown, so dead again: replay does not hide it
    assert runner.invoke(args=["dead-letters", "replay", "nope"]).exit_code != 0


def test_a_batch_with_poison_and_transient_failures_applies_the_rest(app, staff, customer):
    for n in range(6):
        staff.post("/api/v1/cars", json={**CAR, "vin": f"WVWZZZ1JZXW00001{n}", "owner_id": customer.user["id"]})
    subjects = [row.subject for row in db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at))]
    poison, transient = subjects[1], subjects[4]

    def picky(queue, message):
        if message.subject == poison:
            raise InvalidMessage("this car is cursed")
        if message.subject == transient:
            raise OperationalError("UPDATE", {}, Exception("lock timeout"))
        handle(queue, message)

    embedded = worker(app, picky)
    embedded.relay_pending()
    assert embedded.consume_pending() == 6  # taken as one batch

    assert count(Notification) == 4
    assert [letter.reason for letter in db.session.scalars(select(DeadLetter))] == [
        "InvalidMessage: this car is cursed"
    ]
    waiting = db.session.scalars(select(LocalDelivery)).one()
    assert waiting.attempts == 1 and "lock timeout" in waiting.last_error
    assert count(InboxMessage) == 4


def test_a_batch_costs_one_statement_per_notification_and_one_inbox_insert(app, staff, customer):
    """The consumer's fast path: each notification is one INSERT that checks its user, the
    batch's inbox rows are one multi-row INSERT, and nothing else touches those tables."""
    for n in range(5):
        staff.post("/api/v1/cars", json={**CAR, "vin": f"WVWZZZ1JZXW00002{n}", "owner_id": customer.user["id"]})
    embedded = worker(app)
    embedded.relay_pending()
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        if any(table in statement for table in ("inbox", "notifications", "users")):
            statements.append(" ".join(statement.split()[:3]).replace('"', ""))

    sa_event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert embedded.consume_pending() == 5
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", seen)
    assert statements == ["INSERT INTO notifications"] * 5 + ["INSERT INTO inbox"]
    assert count(Notification) == 5 and count(InboxMessage) == 5


def test_a_user_who_is_gone_is_not_notified_and_the_batch_goes_on(app, staff, customer):
    other = staff.post("/api/v1/cars", json={**CAR, "vin": "WVWZZZ1JZXW000031", "owner_id": customer.user["id"]})
    assert other.status_code == 201
    embedded = worker(app)
    embedded.relay_pending()
    from models.users import User

    db.session.execute(delete(User).where(User.id == customer.user["id"]))
    db.session.commit()
    assert embedded.consume_pending() == 1
    assert count(Notification) == 0 and count(InboxMessage) == 1 and count(DeadLetter) == 0


def test_unroutable_events_stay_unsent_and_do_not_block_the_rest(app, staff):
    from services.events import record_event

    record_event("nobody.listens", None, {})
    db.session.commit()
    staff.post("/api/v1/cars", json=CAR)
    worker(app).run_until_idle()

    stuck = db.session.scalars(select(OutboxMessage).where(OutboxMessage.type == "nobody.listens")).one()
    assert stuck.published_at is None and "unroutable" in stuck.last_error and stuck.next_attempt_at > utcnow()
    assert count(OutboxMessage, OutboxMessage.published_at.is_not(None)) == 1


def test_a_value_the_database_refuses_is_dead_lettered_at_once(app, backend):
    if backend == "embedded":
        pytest.skip("SQLite stores a NUL character")
    from models.stock import StockLevel

    refused = json.loads(cloudevent("stock.command.increase", {"action": "increase", "sku": "SKU-NUL", "qty": 1}))
    refused["source"] = "warehouse\u0000"  # kept as the command's source: PostgreSQL refuses it
    enqueue("carhub.stock", "stock.command.increase", json.dumps(refused))
    enqueue("carhub.stock", "stock.command.increase", json.dumps({"action": "increase", "sku": "SKU-OK", "qty": 2}))
    worker(app).run_until_idle()

    [letter] = db.session.scalars(select(DeadLetter)).all()
    assert "DataError" in letter.reason
    assert count(LocalDelivery) == 0  # not waiting for a retry that can never succeed
    assert {level.sku: level.qty for level in db.session.scalars(select(StockLevel))} == {"SKU-OK": 2}


def test_broadcast_events_no_queue_takes_are_sent_not_kept(app):
    from services.events import record_event

    record_event("stock.changed", "main:SKU-1", {"sku": "SKU-1"})
    db.session.commit()
    worker(app).run_until_idle()

    row = db.session.scalars(select(OutboxMessage)).one()
    assert row.published_at is not None and row.last_error is None
    assert count(LocalDelivery) == 0


def test_two_relays_at_once_take_each_row_once(app, backend):
    if backend == "embedded":
        pytest.skip("SQLite: one relay at a time (the database has one writer)")
    from services.events import record_event

    for n in range(400):
        record_event("car.created", f"car-{n}", {"n": n})
    db.session.commit()
    relays = [EmbeddedWorker(app, handle, PERMANENT, batch_size=25) for _ in range(2)]
    taken = [0, 0]

    def run(index: int) -> None:
        while (n := relays[index].relay_pending()) > 0:
            taken[index] += n

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert taken[0] + taken[1] == 400
    assert count(LocalDelivery) == 400
    assert db.session.scalar(select(func.count(func.distinct(LocalDelivery.message_id)))) == 400


def test_inbound_forms_reach_the_handler_keyed_by_routing_key(app):
    seen = {}  # by id: a batch that falls back to one-by-one calls a handler again

    def record(queue, message):
        seen[message.id] = (message.type, message.id, dict(message.data))

    warehouse = {
        "id": "b3b53031-e83a-4654-87f5-b6b6fb09fd99",
        "source": "WH-3322",
        "specversion": "1.0",
        "type": "ru.retail.warehouses.movement",
        "time": 1737439421623,
        "subject": "WH-3322:DEPARTURE",
        "data": {"product_id": "SKU1", "quantity": 100, "event": "departure"},
    }
    enqueue("carhub.stock", "stock.movement.departure", json.dumps(warehouse))
    enqueue("carhub.stock", "stock.command.increase", json.dumps({"action": "increase", "sku": "S", "qty": 1}))
    enqueue("carhub.stock", "stock.command.increase", json.dumps({"action": "increase", "sku": "S", "qty": 1}))
    worker(app, record).run_until_idle()

    assert seen.pop(warehouse["id"]) == ("stock.movement.departure", warehouse["id"], warehouse["data"])
    [(routing_key, command_id, _)] = seen.values()  # the identical bare command without an id is one
    assert routing_key == "stock.command.increase" and command_id.startswith("sha256:")
    assert count(InboxMessage) == 2


@pytest.mark.slow
def test_the_real_worker_process_applies_events_and_stops_cleanly(app, staff, customer, start_worker, wait_until):
    process = start_worker(app)
    staff.post("/api/v1/cars", json={**CAR, "owner_id": customer.user["id"]})
    wait_until(lambda: count(Notification) == 1, message="the notification from the embedded worker")
    assert process.stop() == 0
    assert "embedded worker stopped" in process.output()


def test_stats_count_retries_dead_letters_and_queue_depths(app, staff):
    def failing(queue, message):
        if message.id == "e-poison":
            raise InvalidMessage("never")
        raise OperationalError("SELECT 1", {}, Exception("database is down"))

    before = staff.get("/stats").get_json()["events"]
    enqueue("carhub.notifications", "car.created", cloudevent("car.created", {}, "e-poison"))
    enqueue("carhub.stock", "stock.command.increase", json.dumps({"sku": "A", "qty": 1}))
    worker(app, failing).consume_pending()

    stats = staff.get("/stats").get_json()
    assert stats["events"]["dead_lettered"] - before["dead_lettered"] == 1
    assert stats["events"]["retried"] - before["retried"] == 1
    assert stats["queues"] == {"carhub.stock": {"messages": 1}}  # waiting for its retry
