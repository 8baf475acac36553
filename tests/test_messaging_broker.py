"""The event backbone on the real RabbitMQ and PostgreSQL, with the real worker process.

Each session has its own vhost (``rabbitmq_url``); ``broker_app`` purges its queues
before each test. Faults are real: SIGKILL, connections closed by the broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from urllib.parse import unquote, urlsplit

import pika
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from consumer import PERMANENT
from extensions import db
from messaging.broker import BrokerConsumer
from messaging.relay import BrokerRelay
from messaging.topology import (
    ATTEMPT_HEADER,
    DEAD_LETTER_QUEUE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    FAILED_QUEUE_HEADER,
    MAX_RETRIES,
)
from messaging.wakeup import OutboxDoorbell
from models.messaging import DeadLetter, InboxMessage, OutboxMessage
from models.notifications import Notification
from services import cars
from services.events import record_event
from tests.conftest import make_user, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

VINS = iter(f"1HGCM82633A{n:06d}" for n in range(1, 1_000_000))
NOTIFICATIONS = "carhub.notifications"


def new_car(owner_id: str | None) -> dict:
    return cars.create_car({"vin": next(VINS), "make": "Honda", "model": "Accord", "year": 2020, "owner_id": owner_id})


def count(model: type, *where: object) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def url_of(app) -> str:
    return app.config["RABBITMQ_URL"]


def publish(url: str, routing_key: str, body: bytes | str, **properties) -> None:
    """What an outside producer does: publish to carhub.events (confirmed)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            EVENTS_EXCHANGE,
            routing_key,
            body.encode() if isinstance(body, str) else body,
            pika.BasicProperties(delivery_mode=2, **properties),
            mandatory=True,
        )
    finally:
        connection.close()


def depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def peek(url: str, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Look at every message of ``queue`` without taking it (unacked, then requeued)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        seen = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                return seen
            seen.append((properties, body))
    finally:
        connection.close()


def car_event(event_id: str, owner_id: str, vin: str = "X") -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "test",
            "type": "car.created",
            "data": {"id": f"car-{event_id}", "owner_id": owner_id, "make": "Lada", "model": "Niva", "vin": vin},
        }
    )


class InProcess:
    """The consumer runtime in a thread of the test (to give it a handler of our own)."""

    def __init__(self, app, handler, **options) -> None:
        self.consumer = BrokerConsumer(app, url_of(app), handler, PERMANENT, **options)
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)

    def __enter__(self) -> InProcess:
        self.thread.start()
        assert self.consumer.ready.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.stop.set()
        self.thread.join(30)


# --- the product path -------------------------------------------------------------------


def test_car_event_becomes_owner_notification_through_rabbitmq(broker_app, broker_client, start_worker):
    owner = make_user(broker_client, "customer")
    start_worker(broker_app)
    car = new_car(owner.user["id"])

    wait_until(lambda: count(Notification) == 1, message="the owner's notification")
    notification = owner.get("/api/v1/notifications").get_json()["items"][0]
    assert notification["reference"] == car["id"] and notification["kind"] == "car.created"
    assert count(OutboxMessage, OutboxMessage.published_at.is_(None)) == 0
    assert count(InboxMessage) == 1


def test_published_iff_committed_with_readable_amqp_properties(broker_app, broker_client):
    staff = make_user(broker_client, "staff")
    body = {"vin": "WVWZZZ1JZXW000001", "make": "VW", "model": "Golf", "year": 1999}
    created = staff.post("/api/v1/cars", json=body, headers={"X-Request-ID": "req-42"})
    assert created.status_code == 201
    assert staff.post("/api/v1/cars", json=body).status_code == 409  # rolled back: no event

    relay = BrokerRelay(broker_app, url_of(broker_app))
    try:
        assert relay.publish_pending() == 1
    finally:
        relay.close()

    [(properties, raw)] = peek(url_of(broker_app), NOTIFICATIONS)
    outbox = db.session.scalars(select(OutboxMessage)).one()
    assert outbox.published_at is not None
    assert properties.content_type == "application/cloudevents+json"
    assert properties.message_id == outbox.id and properties.type == "car.created"
    assert properties.app_id == "carhub" and properties.delivery_mode == 2
    assert properties.correlation_id == "req-42" and properties.timestamp > 0
    envelope = json.loads(raw)
    assert envelope["specversion"] == "1.0" and envelope["id"] == outbox.id
    assert envelope["subject"] == created.get_json()["id"] and envelope["data"]["vin"] == body["vin"]


def test_the_same_message_delivered_twice_has_one_effect(broker_app, broker_client, start_worker):
    owner = make_user(broker_client, "customer")
    start_worker(broker_app)
    url = url_of(broker_app)
    publish(url, "car.created", car_event("dup-1", owner.user["id"]))
    publish(url, "car.created", car_event("dup-1", owner.user["id"]))
    publish(url, "car.created", car_event("sentinel", owner.user["id"]))  # applied after both

    wait_until(lambda: count(InboxMessage, InboxMessage.message_id == "sentinel") == 1, message="the sentinel")
    assert count(Notification) == 2
    assert count(InboxMessage) == 2


def test_sigkill_after_commit_before_ack_leaves_one_effect(broker_app, broker_client, start_worker):
    owner = make_user(broker_client, "customer")
    url = url_of(broker_app)
    doomed = start_worker(broker_app, env={"CARHUB_TEST_ACK_DELAY_SECONDS": "30"})
    new_car(owner.user["id"])
    wait_until(lambda: count(Notification) == 1, message="the committed effect")
    wait_until(lambda: "acking in" in doomed.output(), message="the worker to sit between commit and ack")
    doomed.kill()

    wait_until(lambda: depth(url, NOTIFICATIONS) == 1, message="the unacked message back on the queue")
    successor = start_worker(broker_app)
    wait_until(lambda: depth(url, NOTIFICATIONS) == 0, message="the redelivery to be taken")
    assert successor.stop() == 0  # SIGTERM: finishes and acks what it took
    assert depth(url, NOTIFICATIONS) == 0  # so nothing came back unacked
    assert count(Notification) == 1
    assert count(InboxMessage) == 1


def test_connections_closed_by_the_broker_mid_stream_lose_nothing(broker_app, broker_client, start_worker):
    owner = make_user(broker_client, "customer")
    worker = start_worker(broker_app)
    vhost = unquote(urlsplit(url_of(broker_app)).path.lstrip("/"))
    total = 60

    def stream() -> None:
        with broker_app.app_context():
            for _ in range(total):
                new_car(owner.user["id"])
                time.sleep(0.04)

    producer = threading.Thread(target=stream)
    producer.start()
    for _ in range(2):
        time.sleep(0.6)
        subprocess.run(
            ["rabbitmqctl", "close_all_connections", "-p", vhost, "test: broker closes connections"],
            check=True,
            capture_output=True,
        )
    producer.join()

    # A row whose confirm was lost with the connection stays unsent and goes out again
    # after the reconnect (at least once); the inbox makes the second copy harmless.
    wait_until(
        lambda: count(OutboxMessage, OutboxMessage.published_at.is_(None)) == 0, timeout=60, message="the outbox"
    )
    wait_until(lambda: count(Notification) == total, timeout=60, message=f"{total} notifications")
    assert "lost the broker" in worker.output()  # it really was cut off, and came back
    time.sleep(1.0)
    assert count(Notification) == total
    assert count(InboxMessage) == total


def test_poison_messages_are_dead_lettered_with_the_reason_and_the_next_is_processed(
    broker_app, broker_client, start_worker
):
    owner = make_user(broker_client, "customer")
    admin = make_user(broker_client, "admin")
    start_worker(broker_app)
    url = url_of(broker_app)
    publish(url, "car.created", b"\xff not JSON at all", message_id="poison-1")
    publish(url, "ticket.frobnicated", json.dumps({"specversion": "1.0", "id": "poison-2", "data": {}}))
    publish(url, "car.created", car_event("valid-1", owner.user["id"]))

    wait_until(lambda: count(Notification) == 1, message="the valid message after the poison")
    wait_until(lambda: count(DeadLetter) == 2, message="the dead letters copied to the table")

    for _ in range(2):  # looking (twice) loses nothing: the queue is classic, no delivery limit
        letters = peek(url, DEAD_LETTER_QUEUE)
        assert len(letters) == 2
    headers = {props.message_id or json.loads(body)["id"]: props.headers for props, body in letters}
    assert "not JSON" in headers["poison-1"][ERROR_HEADER]
    assert headers["poison-1"][FAILED_QUEUE_HEADER] == NOTIFICATIONS
    assert "InvalidMessage" in headers["poison-2"][ERROR_HEADER]

    listed = admin.get("/api/v1/admin/dead-letters").get_json()
    assert listed["total"] == 2
    assert {item["routing_key"] for item in listed["items"]} == {"car.created", "ticket.frobnicated"}
    assert all(item["queue"] == NOTIFICATIONS and item["reason"] for item in listed["items"])


def test_transient_failure_is_retried_through_the_delay_queue(broker_app):
    from messaging.metrics import MESSAGES

    calls: list[str] = []
    retried = MESSAGES.labels("retried")
    before = retried._value.get()

    def flaky(queue, message):
        calls.append(message.id)
        if len(calls) <= 2:  # the batch try and the one-by-one try both fail
            raise OperationalError("SELECT 1", {}, Exception("database is down"))

    with InProcess(broker_app, flaky):
        publish(url_of(broker_app), "car.created", car_event("flaky-1", "nobody"))
        wait_until(lambda: count(InboxMessage, InboxMessage.message_id == "flaky-1") == 1, message="the retry")
    assert calls == ["flaky-1"] * 3
    assert retried._value.get() - before == 1  # it went round the delay queue once
    assert count(DeadLetter) == 0


def test_exhausted_retries_are_dead_lettered_and_replay_applies_them(broker_app, broker_client):
    admin = make_user(broker_client, "admin")
    broken = {"on": True}
    applied = []

    def flaky(queue, message):
        if broken["on"]:
            raise OperationalError("SELECT 1", {}, Exception("database is down"))
        applied.append(message.id)

    url = url_of(broker_app)
    with InProcess(broker_app, flaky):
        # A message on its last try (as if it came back from the last delay queue).
        publish(url, "car.created", car_event("tired-1", "nobody"), headers={ATTEMPT_HEADER: MAX_RETRIES})
        wait_until(lambda: count(DeadLetter) == 1, message="the dead letter")
        letter = db.session.scalars(select(DeadLetter)).one()
        assert letter.reason.startswith(f"gave up after {MAX_RETRIES + 1} attempts")
        assert letter.queue == NOTIFICATIONS and letter.routing_key == "car.created"

        broken["on"] = False
        assert admin.post(f"/api/v1/admin/dead-letters/{letter.id}/replay").status_code == 202
        relay = BrokerRelay(broker_app, url)
        try:
            assert relay.publish_pending() == 1
        finally:
            relay.close()
        wait_until(lambda: applied == ["tired-1"], message="the replayed message to be applied")
    assert depth(url, "carhub.stock") == 0 and depth(url, "carhub.bonus") == 0  # only the failed queue got it


def test_two_relays_at_once_publish_each_row_once(broker_app):
    total = 1000
    for n in range(total):
        record_event("car.created", f"car-{n}", {"n": n})
    db.session.commit()
    relays = [BrokerRelay(broker_app, url_of(broker_app), batch_size=50) for _ in range(2)]
    taken = [0, 0]

    def run(index: int) -> None:
        try:
            while (n := relays[index].publish_pending()) > 0:
                taken[index] += n
        finally:
            relays[index].close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(taken) == total and min(taken) > 0
    assert count(OutboxMessage, OutboxMessage.published_at.is_(None)) == 0
    wait_until(lambda: depth(url_of(broker_app), NOTIFICATIONS) == total, message="every row on the queue")
    time.sleep(0.3)
    assert depth(url_of(broker_app), NOTIFICATIONS) == total  # and not one more


def test_the_outbox_rings_the_relay_at_commit_once_and_never_on_rollback(broker_app):
    """The trigger on the outbox rings whoever writes; the doorbell swallows rings its next read covers."""
    doorbell = OutboxDoorbell(broker_app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        assert doorbell.wait(0.05) is False  # LISTENing now; nothing rang
        record_event("car.created", "car-1", {})
        db.session.rollback()
        assert doorbell.wait(0.3) is False
        record_event("car.created", "car-2", {})
        record_event("car.created", "car-3", {})
        db.session.commit()
        for n in range(4, 7):  # three more commits before the relay looks
            record_event("car.created", f"car-{n}", {})
            db.session.commit()
        time.sleep(0.2)
        assert doorbell.wait(2) is True
        assert doorbell.wait(0.3) is False  # the four rings were one wake
    finally:
        doorbell.close()


def test_a_partial_batch_is_read_once_per_drain(broker_app, monkeypatch):
    """Below a full batch the relay does not select again in the same drain (it waits for the bell)."""
    for n in range(3):
        record_event("car.created", f"car-{n}", {"n": n})
    db.session.commit()
    relay = BrokerRelay(broker_app, url_of(broker_app), batch_size=2)
    takes: list[int] = []
    take = relay._take

    def counted():
        batch = take()
        takes.append(len(batch.rows) if batch else 0)
        return batch

    monkeypatch.setattr(relay, "_take", counted)
    try:
        assert relay.drain() == 3
    finally:
        relay.close()
    assert takes == [2, 1]  # full, so pipelined; then partial: no third, empty read
    assert count(OutboxMessage, OutboxMessage.published_at.is_(None)) == 0


def test_unroutable_rows_are_not_marked_sent(broker_app):
    record_event("nobody.listens", None, {})
    record_event("car.created", "car-1", {})
    db.session.commit()
    relay = BrokerRelay(broker_app, url_of(broker_app))
    try:
        assert relay.publish_pending() == 2
        assert relay.publish_pending() == 0  # the returned row waits, it does not spin
    finally:
        relay.close()
    rows = {row.type: row for row in db.session.scalars(select(OutboxMessage))}
    assert rows["car.created"].published_at is not None
    stuck = rows["nobody.listens"]
    assert stuck.published_at is None and "unroutable" in stuck.last_error and stuck.attempts == 1


def test_broadcast_events_are_sent_even_with_no_subscriber(broker_app):
    """``stock.changed`` has no carhub queue: the broker drops it, the outbox does not keep it."""
    record_event("stock.changed", "main:SKU-1", {"sku": "SKU-1"})
    record_event("nobody.listens", None, {})
    db.session.commit()
    relay = BrokerRelay(broker_app, url_of(broker_app))
    try:
        assert relay.publish_pending() == 2
    finally:
        relay.close()
    rows = {row.type: row for row in db.session.scalars(select(OutboxMessage))}
    assert rows["stock.changed"].published_at is not None and rows["stock.changed"].attempts == 0
    assert rows["nobody.listens"].published_at is None  # a missing binding is still an error


def test_the_supervisor_restarts_a_killed_worker_and_stops_cleanly(broker_app, broker_client, start_worker):
    owner = make_user(broker_client, "customer")
    supervisor = start_worker(broker_app, supervised=True)
    child = _children(supervisor.pid)
    assert len(child) == 1
    os.kill(child[0], 9)
    wait_until(lambda: supervisor.output().count("consuming carhub.") >= 2, message="a new worker")
    assert supervisor.alive
    new_car(owner.user["id"])
    wait_until(lambda: count(Notification) == 1, message="the new worker to apply events")
    assert supervisor.stop() == 0
    assert _children(supervisor.pid) == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_a_slow_handler_does_not_miss_heartbeats(broker_app, caplog):
    """Handlers run off the I/O thread: a 1 s heartbeat survives a 4 s handler."""
    applied = []

    def slow(queue, message):
        time.sleep(4)
        applied.append(message.id)

    with InProcess(broker_app, slow, heartbeat=1) as running:
        generation = running.consumer.generation
        publish(url_of(broker_app), "car.created", car_event("slow-1", "nobody"))
        wait_until(lambda: count(InboxMessage) == 1, message="the slow message")
        time.sleep(0.5)
        assert running.consumer.generation == generation  # never reconnected
    assert applied == ["slow-1"]
    assert depth(url_of(broker_app), NOTIFICATIONS) == 0
    assert "lost the broker" not in caplog.text


def test_sigterm_finishes_in_flight_work_then_exits(broker_app, broker_client, start_worker):
    owner = make_user(broker_client, "customer")
    worker = start_worker(broker_app, env={"CARHUB_TEST_ACK_DELAY_SECONDS": "2"})
    new_car(owner.user["id"])
    wait_until(lambda: "acking in" in worker.output(), message="work in flight")
    assert worker.stop() == 0
    assert "consumer stopped" in worker.output() and "relay stopped" in worker.output()
    assert depth(url_of(broker_app), NOTIFICATIONS) == 0  # acked before it left, not requeued
    assert count(Notification) == 1


def test_health_and_stats_report_the_broker_backlog_and_queues(broker_app, broker_client):
    staff = make_user(broker_client, "staff")
    record_event("car.created", "car-1", {})
    db.session.commit()
    health = broker_client.get("/health").get_json()
    broker = health["checks"]["broker"]
    assert broker["status"] == "ok" and broker["backend"] == "rabbitmq" and broker["server"].startswith("3.")
    assert broker["outbox_backlog"] == 1 and broker["outbox_oldest_unsent_seconds"] >= 0

    publish(url_of(broker_app), "stock.command.increase", json.dumps({"sku": "A", "qty": 1}))
    stats = staff.get("/stats").get_json()
    assert stats["queues"]["carhub.stock"]["messages"] == 1
    assert stats["queues"][DEAD_LETTER_QUEUE]["messages"] == 0
    assert {"published", "consumed", "retried", "dead_lettered"} <= set(stats["events"])
    assert stats["events"]["unpublished"] == 1


def test_a_message_redelivered_past_the_delivery_limit_reaches_the_dead_letters(broker_app):
    """What a crash-looping consumer causes: the quorum queue's delivery limit moves the
    message to carhub.dlx (at-least-once), and the worker files it with the reason."""
    from messaging.topology import DELIVERY_LIMIT

    url = url_of(broker_app)
    publish(url, "car.created", car_event("crashy-1", "nobody"), message_id="crashy-1")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for _ in range(DELIVERY_LIMIT + 1):
            method, _, _ = channel.basic_get(NOTIFICATIONS)
            if method is None:
                break
            channel.basic_nack(method.delivery_tag, requeue=True)  # as a crash would
    finally:
        connection.close()
    wait_until(lambda: depth(url, DEAD_LETTER_QUEUE) == 1, message="the broker to dead-letter it")
    assert depth(url, NOTIFICATIONS) == 0

    with InProcess(broker_app, lambda queue, message: None):
        wait_until(lambda: count(DeadLetter) == 1, message="the dead letter filed")
    letter = db.session.scalars(select(DeadLetter)).one()
    assert "delivery_limit" in letter.reason and letter.queue == NOTIFICATIONS
    assert letter.routing_key == "car.created" and letter.message_id == "crashy-1"
    assert count(InboxMessage) == 0


def test_flask_topology_commands(broker_app, tmp_path):
    runner = broker_app.test_cli_runner()
    declared = runner.invoke(args=["topology", "declare"])
    assert declared.exit_code == 0 and "declared" in declared.output
    exported = runner.invoke(args=["topology", "export", "--output", str(tmp_path / "d.json"), "--user", ""])
    assert exported.exit_code == 0
    definitions = json.loads((tmp_path / "d.json").read_text())
    assert definitions["users"] == [] and {q["name"] for q in definitions["queues"]} >= {NOTIFICATIONS}


def test_database_connections_killed_mid_stream_lose_nothing_and_apply_once(broker_app, broker_client, start_worker):
    """A real transient fault: PostgreSQL drops every connection of the worker (relay,
    doorbell and consumer) while it works. Retries and reconnects: each event once."""
    owner = make_user(broker_client, "customer")
    worker = start_worker(broker_app)
    for _ in range(20):
        new_car(owner.user["id"])
    with db.engine.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    db.session.remove()
    # This process plays the web side, whose pool would fail one request on a connection
    # killed in use (tests/test_operations.py): start it afresh; the worker is on its own.
    db.engine.dispose()
    for _ in range(20):
        new_car(owner.user["id"])

    wait_until(
        lambda: count(OutboxMessage, OutboxMessage.published_at.is_(None)) == 0, timeout=60, message="the outbox"
    )
    wait_until(lambda: count(Notification) == 40, timeout=60, message=f"40 notifications:\n{worker.output()[-2000:]}")
    time.sleep(1.0)
    assert count(Notification) == 40 and count(InboxMessage) == 40
    assert count(DeadLetter) == 0
