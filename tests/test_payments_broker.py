"""Payments → bonus through the real RabbitMQ and the real worker process.

The worker is ``consumer.py --single`` (fixture ``start_worker``). To kill it between
commit and ack, the test gives it a ``sitecustomize`` (via PYTHONPATH) that SIGKILLs the
process right after the first commit that wrote a bonus ledger entry: the accrual is
committed, the ack never sent, so RabbitMQ redelivers the message to the next worker.
"""

from __future__ import annotations

import os
import textwrap
from decimal import Decimal
from pathlib import Path

import pika
import pytest
from sqlalchemy import func, select

from extensions import db
from models.bonuses import BonusAccount, BonusEntry
from models.messaging import InboxMessage
from models.notifications import Notification
from tests.conftest import make_user
from tests.orders_helpers import order_costing, pay

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CRASH_HOOK = textwrap.dedent(
    """
    # Test-only: SIGKILL this process right after the first commit that wrote a bonus
    # ledger entry (so after commit, before ack); a marker file makes it happen once.
    # The accrual inserts with a Core statement, the ORM may flush objects: watch both.
    import os
    import signal

    from sqlalchemy import event
    from sqlalchemy.orm import Session

    MARKER = os.environ["CARHUB_TEST_CRASH_MARKER"]


    def _writes_bonus_entries(statement):
        table = getattr(statement, "table", None)
        return getattr(table, "name", "") == "bonus_entries"


    @event.listens_for(Session, "do_orm_execute")
    def _saw_bonus_insert(state):
        if state.is_insert and _writes_bonus_entries(state.statement):
            state.session.info["carhub_test_crash"] = True


    @event.listens_for(Session, "after_flush")
    def _saw_bonus_entry(session, _context):
        if any(getattr(obj, "__tablename__", "") == "bonus_entries" for obj in session.new):
            session.info["carhub_test_crash"] = True


    @event.listens_for(Session, "after_commit")
    def _crash_after_commit(session):
        if session.in_nested_transaction():
            return  # a savepoint released: nothing is committed yet
        if session.info.pop("carhub_test_crash", False) and not os.path.exists(MARKER):
            open(MARKER, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def balance_of(user_id: str) -> Decimal | None:
    return db.session.scalar(select(BonusAccount.balance).where(BonusAccount.user_id == user_id))


def accruals(user_id: str) -> int:
    query = (
        select(func.count()).select_from(BonusEntry).where(BonusEntry.user_id == user_id, BonusEntry.kind == "accrual")
    )
    return db.session.scalar(query) or 0


def ready_messages(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def test_payment_becomes_bonus_through_rabbitmq(broker_app, broker_client, start_worker, wait_until):
    staff = make_user(broker_client, "staff")
    customer = make_user(broker_client, "customer")
    start_worker(broker_app)
    order = order_costing(staff, customer, "4500.00")
    payment = pay(customer, order["id"])
    assert payment.status_code == 201

    wait_until(lambda: balance_of(customer.user["id"]) == Decimal("45.00"), message="the accrual")
    assert customer.get("/api/v1/bonuses/me").get_json()["balance"] == "45.00"
    wait_until(
        lambda: db.session.scalar(
            select(Notification.id).where(
                Notification.user_id == customer.user["id"], Notification.kind == "bonus.accrued"
            )
        ),
        message="the bonus.accrued notification",
    )
    assert accruals(customer.user["id"]) == 1

    assert staff.post(f"/api/v1/payments/{payment.get_json()['id']}/refund").status_code == 200
    wait_until(lambda: balance_of(customer.user["id"]) == Decimal("0.00"), message="the reversal")
    kinds = [entry["kind"] for entry in customer.get("/api/v1/bonuses/me").get_json()["entries"]]
    assert kinds == ["reversal", "accrual"]


def test_consumer_killed_between_commit_and_ack_still_credits_once(
    broker_app, broker_client, start_worker, wait_until, tmp_path: Path
):
    staff = make_user(broker_client, "staff")
    customer = make_user(broker_client, "customer")
    (tmp_path / "sitecustomize.py").write_text(CRASH_HOOK)
    marker = tmp_path / "crashed"
    hook_env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "CARHUB_TEST_CRASH_MARKER": str(marker),
    }
    doomed = start_worker(broker_app, env=hook_env)
    order = order_costing(staff, customer, "4500.00")
    assert pay(customer, order["id"]).status_code == 201

    wait_until(lambda: not doomed.alive, timeout=30, message=f"the worker to die:\n{doomed.output()[-2000:]}")
    assert doomed.process.returncode == -9 and marker.exists()
    # The accrual committed, the ack never went out: the message is back on the queue.
    assert balance_of(customer.user["id"]) == Decimal("45.00")
    url = broker_app.config["RABBITMQ_URL"]
    wait_until(lambda: ready_messages(url, "carhub.bonus") >= 1, message="the unacked message to come back")

    survivor = start_worker(broker_app)
    wait_until(lambda: ready_messages(url, "carhub.bonus") == 0, message="the redelivery to be consumed")
    wait_until(
        lambda: db.session.scalar(
            select(Notification.id).where(
                Notification.user_id == customer.user["id"], Notification.kind == "bonus.accrued"
            )
        ),
        message="the notifications to catch up",
    )
    assert survivor.alive
    assert balance_of(customer.user["id"]) == Decimal("45.00")
    assert accruals(customer.user["id"]) == 1
    inbox = select(func.count()).select_from(InboxMessage).where(InboxMessage.consumer == "carhub.bonus")
    assert db.session.scalar(inbox) == 1  # applied once, acknowledged as a duplicate the second time
