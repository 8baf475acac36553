"""Stock end to end over the real RabbitMQ, PostgreSQL and Redis, with real worker processes.

Outside producers publish with a plain pika client to ``carhub.events``; the worker
(``consumer.py --single``) relays carhub's outbox and consumes ``carhub.stock``.
"""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import func, select

from extensions import db
from models.stock import StockCommand, StockLedgerEntry
from tests.conftest import make_user
from tests.stock_helpers import (
    WEBHOOK,
    command,
    command_statuses,
    ledger_count,
    level_url,
    levels,
    movement_cloudevent,
    qty_of,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

# Test-only: SIGKILL the worker right after the consumer commit that takes the statements
# writing the stock ledger past CARHUB_TEST_KILL_AFTER (after commit, before the acks;
# a bare command's claim runs twice, so that is roughly half as many commands); once.
CRASH_HOOK = textwrap.dedent(
    """
    import os
    import signal

    from sqlalchemy import event, text
    from sqlalchemy.orm import Session

    MARKER = os.environ["CARHUB_TEST_CRASH_MARKER"]
    LIMIT = int(os.environ["CARHUB_TEST_KILL_AFTER"])
    seen = {"ledger_rows": 0}


    @event.listens_for(Session, "before_commit")
    def _count_ledger_rows(session):
        # About to commit: count the ledger however it was written (the claim runs on
        # the driver connection). A commit that saw it grow may be the relay's; a kill
        # after it is as good a crash as any.
        if session.in_nested_transaction():
            return
        rows = session.execute(text("SELECT count(*) FROM stock_ledger")).scalar()
        session.info["carhub_test_wrote_ledger"] = rows > seen["ledger_rows"]
        seen["ledger_rows"] = rows


    @event.listens_for(Session, "after_commit")
    def _crash_after_commit(session):
        if session.in_nested_transaction():
            return  # a savepoint released: nothing is committed yet
        wrote = session.info.pop("carhub_test_wrote_ledger", False)
        if wrote and seen["ledger_rows"] >= LIMIT and not os.path.exists(MARKER):
            open(MARKER, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


class Publisher:
    """An outside producer: a plain pika client with publisher confirms."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None:
        content_type = "application/cloudevents+json" if "specversion" in body else "application/json"
        properties = pika.BasicProperties(content_type=content_type, delivery_mode=2, message_id=message_id)
        self.channel.basic_publish("carhub.events", routing_key, json.dumps(body).encode(), properties, mandatory=True)

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def publisher(broker_app):
    outside = Publisher(broker_app.config["RABBITMQ_URL"])
    yield outside
    outside.close()


def queue_state(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        method = connection.channel().queue_declare(queue, passive=True).method
        return method.message_count, method.consumer_count
    finally:
        connection.close()


def applied(command_id: str) -> bool:
    return db.session.scalar(select(StockCommand.status).where(StockCommand.id == command_id)) == "applied"


def movement_doc(api, movement_id: str) -> dict[str, Any] | None:
    response = api.get(f"/api/v1/movements/{movement_id}")
    if response.status_code != 200:
        return None
    return response.get_json()


def test_a_movement_pair_from_an_outside_client_and_through_the_webhook_give_the_same_state(
    broker_app, broker_client, start_worker, wait_until, publisher
):
    staff = make_user(broker_client, "staff")
    start_worker(broker_app)
    for sku in ("SKU-AMQP", "SKU-HOOK"):
        publisher.publish(
            "stock.command.increase", {"action": "increase", "sku": sku, "qty": 100, "warehouse_id": "WH-A"}
        )
    wait_until(lambda: ledger_count() == 2, message="the stock-up")

    def pair(movement_id: str, sku: str) -> list[dict[str, Any]]:
        departure = movement_cloudevent("departure", movement_id, "WH-A", sku, 60, timestamp="2025-02-18T12:12:56Z")
        arrival = movement_cloudevent(
            "arrival", movement_id, "WH-B", sku, 57, timestamp="2025-02-18T12:42:56Z", time="2025-02-18T12:42:57Z"
        )
        resent = {**departure, "id": str(uuid.uuid4())}  # the warehouse sends the same side again
        return [departure, arrival, departure, arrival, resent]

    for cloudevent in pair("mv-amqp", "SKU-AMQP"):  # published twice (and once re-sent)
        publisher.publish(f"stock.movement.{cloudevent['data']['event']}", cloudevent)
    for cloudevent in pair("mv-hook", "SKU-HOOK"):
        response = staff.post(WEBHOOK, json=cloudevent)
        assert response.status_code == 202, response.get_json()

    for movement_id in ("mv-amqp", "mv-hook"):
        wait_until(
            lambda m=movement_id: (movement_doc(staff, m) or {}).get("status") == "completed",
            message=f"{movement_id} to complete",
        )
    url = broker_app.config["RABBITMQ_URL"]
    wait_until(lambda: queue_state(url, "carhub.stock")[0] == 0, message="the duplicates to be consumed")

    over_broker, over_webhook = movement_doc(staff, "mv-amqp"), movement_doc(staff, "mv-hook")
    assert over_broker.pop("movement_id") == "mv-amqp" and over_webhook.pop("movement_id") == "mv-hook"
    assert over_broker.pop("sku") == "SKU-AMQP" and over_webhook.pop("sku") == "SKU-HOOK"
    assert over_broker == over_webhook
    assert over_broker["transit_seconds"] == 1800.0 and over_broker["quantity_difference"] == -3
    assert levels() == {
        ("WH-A", "SKU-AMQP"): 40,
        ("WH-B", "SKU-AMQP"): 57,
        ("WH-A", "SKU-HOOK"): 40,
        ("WH-B", "SKU-HOOK"): 57,
    }
    assert ledger_count(movement_id="mv-amqp") == ledger_count(movement_id="mv-hook") == 2
    assert qty_of(staff, "SKU-HOOK", "WH-B") == qty_of(staff, "SKU-AMQP", "WH-B") == 57


def test_a_read_then_an_arrival_of_50_then_the_read_shows_it_at_once(
    broker_app, broker_client, start_worker, wait_until, publisher
):
    """The worker process invalidates the cached read (Redis) after it commits."""
    customer = make_user(broker_client, "customer")
    start_worker(broker_app)
    assert qty_of(customer, "P-50") == 0  # cached now
    assert customer.get("/api/v1/stock/items?sku=P-50").get_json()["total"] == 0

    publisher.publish("stock.movement.arrival", movement_cloudevent("arrival", "mv-50", "main", "P-50", 50))
    wait_until(lambda: ledger_count(movement_id="mv-50") == 1, message="the arrival to be applied")

    assert qty_of(customer, "P-50") == 50
    listed = customer.get("/api/v1/stock/items?sku=P-50").get_json()["items"]
    assert [(item["sku"], item["qty"]) for item in listed] == [("P-50", 50)]


def test_two_consumer_processes_race_50_decreases_of_1_against_20(broker_app, broker_client, start_worker, wait_until):
    staff = make_user(broker_client, "staff")
    url = broker_app.config["RABBITMQ_URL"]
    start_worker(broker_app)
    start_worker(broker_app)
    wait_until(lambda: queue_state(url, "carhub.stock")[1] == 2, message="two consumers on carhub.stock")

    seed = command(staff, "increase", "HOT", 20).get_json()["command_id"]
    wait_until(lambda: applied(seed), message="the stock-up")
    assert qty_of(staff, "HOT") == 20
    for _ in range(50):
        assert command(staff, "decrease", "HOT", 1).status_code == 202

    wait_until(lambda: "pending" not in command_statuses(), timeout=60, message="every command decided")
    assert command_statuses() == {"applied": 21, "rejected": 30}
    assert levels() == {("main", "HOT"): 0}
    assert ledger_count(sku="HOT", reason="decrease") == 20
    assert qty_of(staff, "HOT") == 0
    rejected = staff.get("/api/v1/stock/items?sku=HOT").get_json()["items"]
    assert rejected[0]["qty"] == 0


def test_sigkill_mid_stream_of_1000_commands_leaves_exact_totals(
    broker_app, broker_client, start_worker, wait_until, publisher, tmp_path: Path
):
    """300 in stock, then 700 increases of 2 and 300 decreases of 1 interleaved (never
    below zero in any order): whatever the kill loses or repeats, the end is 1400."""
    staff = make_user(broker_client, "staff")
    url = broker_app.config["RABBITMQ_URL"]
    (tmp_path / "sitecustomize.py").write_text(CRASH_HOOK)
    marker = tmp_path / "crashed"
    doomed = start_worker(
        broker_app,
        env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
            "CARHUB_TEST_CRASH_MARKER": str(marker),
            "CARHUB_TEST_KILL_AFTER": "300",
        },
    )
    publisher.publish("stock.command.increase", {"action": "increase", "sku": "BULK", "qty": 300}, "seed")
    for n in range(1000):
        if n % 10 < 7:
            body = {"action": "increase", "sku": "BULK", "qty": 2, "command_id": f"bulk-{n}"}
        else:
            body = {"action": "decrease", "sku": "BULK", "qty": 1, "command_id": f"bulk-{n}"}
        publisher.publish(f"stock.command.{body['action']}", body, message_id=f"bulk-{n}")

    wait_until(lambda: not doomed.alive, timeout=60, message=f"the worker to die:\n{doomed.output()[-2000:]}")
    assert doomed.process.returncode == -9 and marker.exists()
    done_when_killed = ledger_count(sku="BULK")
    # Really mid-stream: a good part applied and committed, much still to do.
    assert 100 <= done_when_killed < 900, (done_when_killed, doomed.output()[-3000:])

    start_worker(broker_app)
    wait_until(lambda: ledger_count(sku="BULK") == 1001, timeout=120, message="every command applied")
    wait_until(lambda: queue_state(url, "carhub.stock")[0] == 0, message="the redeliveries to be consumed")

    assert levels() == {("main", "BULK"): 1400}
    assert command_statuses() == {"applied": 1001}
    assert ledger_count(sku="BULK") == 1001
    total = db.session.scalar(select(func.sum(StockLedgerEntry.delta)).where(StockLedgerEntry.sku == "BULK"))
    assert total == 1400
    assert qty_of(staff, "BULK") == 1400
    assert staff.get(level_url("main", "BULK")).get_json()["qty"] == 1400
