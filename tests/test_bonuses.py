"""The bonus account: accrual by the consumer exactly once, rounding, refunds, promo codes,
spending (also concurrently, also against an order), ownership."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from extensions import db
from models.bonuses import BonusAccount, BonusEntry
from models.messaging import OutboxMessage
from models.notifications import Notification
from services import bonuses
from services.handlers import Event
from tests.messaging_helpers import deliver, drain_outbox, event_from_outbox
from tests.orders_helpers import balance, ledger_sums_to_balance, order_costing, pay

ME = "/api/v1/bonuses/me"


def create_promo(app, code: str, amount: str) -> None:
    result = app.test_cli_runner().invoke(args=["promocodes", "create", "--code", code, "--amount", amount])
    assert result.exit_code == 0, result.output


def paid(staff, customer, price: str) -> dict:
    order = order_costing(staff, customer, price)
    response = pay(customer, order["id"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# --- accrual -------------------------------------------------------------------------------


def test_payment_4500_accrues_45_once(staff, customer):
    payment = paid(staff, customer, "4500.00")
    assert balance(customer) == "0.00"  # the consumer has not run yet: accrual is asynchronous
    drain_outbox()
    account = customer.get(ME).get_json()
    assert account["balance"] == "45.00"
    accruals = [e for e in account["entries"] if e["kind"] == "accrual"]
    assert accruals == [
        {
            "id": accruals[0]["id"],
            "kind": "accrual",
            "amount": "45.00",
            "reference": payment["id"],
            "payment_id": payment["id"],
            "order_id": None,
            "unreversed": "0.00",
            "created_at": accruals[0]["created_at"],
        }
    ]
    accrued = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "bonus.accrued"))
    assert accrued.data["amount"] == "45.00" and accrued.data["balance"] == "45.00"
    titles = set(db.session.scalars(select(Notification.title).where(Notification.user_id == customer.user["id"])))
    assert {"Payment of 4500.00 received", "You earned 45.00 bonus"} <= titles
    assert drain_outbox() == []  # nothing left to do


def test_payment_succeeded_delivered_twice_credits_once(staff, customer):
    paid(staff, customer, "4500.00")
    row = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "payment.succeeded"))
    event = event_from_outbox(row)
    assert deliver("carhub.bonus", event) is True
    assert deliver("carhub.bonus", event) is False  # the inbox row says: applied already
    drain_outbox()  # and the relay's own delivery of the same row
    assert balance(customer) == "45.00"
    assert db.session.query(BonusEntry).filter(BonusEntry.kind == "accrual").count() == 1


def test_same_payment_under_another_event_id_credits_once(staff, customer):
    """A producer that re-sends with a fresh id: the ledger's UNIQUE (kind, payment) holds."""
    paid(staff, customer, "4500.00")
    drain_outbox()
    row = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "payment.succeeded"))
    twin = Event(id=str(uuid.uuid4()), type=row.type, data=row.data, subject=row.subject)
    assert deliver("carhub.bonus", twin) is True  # a new message, applied as a no-op
    assert balance(customer) == "45.00"

    # And the database refuses a second accrual entry even past the code.
    db.session.add(
        BonusEntry(
            user_id=customer.user["id"], kind="accrual", amount=Decimal("45.00"), payment_id=row.data["payment_id"]
        )
    )
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


@pytest.mark.parametrize(
    ("price", "bonus"),
    [("0.99", "0.00"), ("99.99", "0.99"), ("100.00", "1.00"), ("1234.56", "12.34"), ("4500.00", "45.00")],
)
def test_accrual_rounds_down_to_the_cent(staff, customer, price, bonus):
    paid(staff, customer, price)
    drain_outbox()
    assert balance(customer) == bonus
    assert ledger_sums_to_balance(customer.user["id"])


def test_accrual_rate_comes_from_config(app, staff, customer):
    app.config["BONUS_ACCRUAL_RATE"] = Decimal("0.05")
    try:
        paid(staff, customer, "999.99")
        drain_outbox()
    finally:
        app.config["BONUS_ACCRUAL_RATE"] = Decimal("0.01")
    assert balance(customer) == "49.99"  # 49.9995 rounded down


def test_accrual_for_an_unknown_payment_is_a_dead_letter(app):
    from services.errors import InvalidMessage

    event = Event(id=str(uuid.uuid4()), type="payment.succeeded", data={"payment_id": "nope", "amount": "1"})
    with pytest.raises(InvalidMessage):
        deliver("carhub.bonus", event)


# --- refund ------------------------------------------------------------------------------------


def test_refund_reverses_the_accrual(staff, customer):
    payment = paid(staff, customer, "4500.00")
    drain_outbox()
    assert balance(customer) == "45.00"
    assert staff.post(f"/api/v1/payments/{payment['id']}/refund").status_code == 200
    drain_outbox()
    account = customer.get(ME).get_json()
    assert account["balance"] == "0.00"
    reversal = next(e for e in account["entries"] if e["kind"] == "reversal")
    assert reversal["amount"] == "-45.00" and reversal["unreversed"] == "0.00"
    assert reversal["payment_id"] == payment["id"]
    # payment.refunded delivered again: nothing more is taken.
    row = db.session.scalar(select(OutboxMessage).where(OutboxMessage.type == "payment.refunded"))
    assert deliver("carhub.bonus", event_from_outbox(row)) is False
    twin = Event(id=str(uuid.uuid4()), type=row.type, data=row.data, subject=row.subject)
    assert deliver("carhub.bonus", twin) is True
    assert balance(customer) == "0.00"
    assert ledger_sums_to_balance(customer.user["id"])


def test_refund_after_the_bonus_was_spent_reverses_what_it_can(staff, customer):
    payment = paid(staff, customer, "4500.00")
    drain_outbox()
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "30.00"}).status_code == 200
    staff.post(f"/api/v1/payments/{payment['id']}/refund")
    drain_outbox()
    account = customer.get(ME).get_json()
    assert account["balance"] == "0.00"  # never below zero
    reversal = next(e for e in account["entries"] if e["kind"] == "reversal")
    assert reversal["amount"] == "-15.00" and reversal["unreversed"] == "30.00"
    assert ledger_sums_to_balance(customer.user["id"])
    [told] = db.session.scalars(select(Notification).where(Notification.kind == "bonus.reversed"))
    assert told.user_id == customer.user["id"] and told.reference == payment["id"]
    assert "15.00" in told.title and "30.00 was already spent" in told.body


def test_refund_before_the_accrual_ran_credits_nothing(staff, customer):
    payment = paid(staff, customer, "4500.00")
    staff.post(f"/api/v1/payments/{payment['id']}/refund")
    drain_outbox()  # succeeded and refunded arrive after the fact, in order
    assert balance(customer) == "0.00"
    assert db.session.query(BonusEntry).count() == 0


def test_every_event_of_payments_and_bonuses_is_routed_and_handled():
    """The relay cannot deliver an event no queue is bound to; each one here has a handler."""
    from messaging.topology import queues_for
    from services.handlers import HANDLERS

    expected = {
        "payment.succeeded": {"carhub.bonus", "carhub.notifications"},
        "payment.refunded": {"carhub.bonus"},
        "bonus.accrued": {"carhub.notifications"},
    }
    for event_type, queues in expected.items():
        assert queues <= set(queues_for(event_type)), event_type
        for queue in queues:
            assert event_type in HANDLERS[queue], (event_type, queue)


# --- promo codes ---------------------------------------------------------------------------


def test_promo_code_once_per_user(app, customer, other_customer):
    create_promo(app, "Welcome100", "100")
    applied = customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "welcome100"})
    assert applied.status_code == 200, applied.get_json()
    assert applied.get_json()["balance"] == "100.00"
    assert applied.get_json()["entry"]["kind"] == "promo" and applied.get_json()["entry"]["reference"] == "WELCOME100"
    assert customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "WELCOME100"}).status_code == 409
    assert other_customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "WELCOME100"}).status_code == 200
    assert customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "NOPE"}).status_code == 404
    assert customer.post("/api/v1/bonuses/promocodes/apply", json={}).status_code == 422
    assert balance(customer) == "100.00"


def test_promocodes_cli_refuses_bad_input(app):
    runner = app.test_cli_runner()
    create_promo(app, "ONCE", "5")
    assert runner.invoke(args=["promocodes", "create", "--code", "once", "--amount", "5"]).exit_code != 0
    assert runner.invoke(args=["promocodes", "create", "--code", "NEG", "--amount", "-5"]).exit_code != 0
    assert runner.invoke(args=["promocodes", "create", "--code", "NAN", "--amount", "lots"]).exit_code != 0
    assert runner.invoke(args=["promocodes", "create", "--code", "HUGE", "--amount", "1e30"]).exit_code != 0
    assert runner.invoke(args=["promocodes", "create", "--code", "BIG", "--amount", "1000000.01"]).exit_code != 0


# --- spending -------------------------------------------------------------------------------


def test_spend_and_insufficient_balance(app, customer):
    create_promo(app, "P100", "100")
    customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "P100"})
    spent = customer.post("/api/v1/bonuses/spend", json={"amount": "40.50"})
    assert spent.status_code == 200
    assert spent.get_json()["balance"] == "59.50"
    assert spent.get_json()["entry"]["amount"] == "-40.50"
    short = customer.post("/api/v1/bonuses/spend", json={"amount": "59.51"})
    assert short.status_code == 409
    assert short.headers["Content-Type"] == "application/problem+json"
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "0"}).status_code == 422
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "abc"}).status_code == 422
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "59.50"}).status_code == 200
    assert balance(customer) == "0.00"
    kinds = [e["kind"] for e in customer.get(ME).get_json()["entries"]]
    assert kinds == ["spend", "spend", "promo"]  # newest first
    assert ledger_sums_to_balance(customer.user["id"])


def test_a_new_customer_has_an_empty_account(customer):
    assert customer.get(ME).get_json() == {
        "user_id": customer.user["id"],
        "balance": "0.00",
        "entries": [],
        "page": 1,
        "size": 50,
        "total": 0,
    }
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "0.01"}).status_code == 409


def test_balance_cannot_go_below_zero_in_the_database(app, customer):
    create_promo(app, "P10", "10")
    customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "P10"})
    account = db.session.get(BonusAccount, customer.user["id"])
    account.balance = Decimal("-0.01")
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_spending_against_an_order_lowers_what_is_left_to_pay(app, staff, customer, other_customer):
    create_promo(app, "P100", "100")
    customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "P100"})
    order = order_costing(staff, customer, "4500.00")
    spent = customer.post("/api/v1/bonuses/spend", json={"amount": "100.00", "order_id": order["id"]})
    assert spent.status_code == 200, spent.get_json()
    assert spent.get_json()["entry"]["order_id"] == order["id"]
    after = customer.get(f"/api/v1/orders/{order['id']}").get_json()
    assert after["bonus_spent"] == "100.00" and after["amount_due"] == "4400.00"

    payment = pay(customer, order["id"]).get_json()
    assert payment["amount"] == "4400.00"
    drain_outbox()
    assert balance(customer) == "44.00"  # 1% of what was paid in money
    # A paid order takes no more bonus; nor does another customer's order.
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "1.00", "order_id": order["id"]}).status_code == 409
    theirs = order_costing(staff, other_customer, "50.00")
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "1.00", "order_id": theirs["id"]}).status_code == 404
    assert balance(customer) == "44.00"


def test_cannot_spend_more_than_an_order_has_left(app, staff, customer):
    create_promo(app, "P100", "100")
    customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "P100"})
    order = order_costing(staff, customer, "60.00")
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "60.01", "order_id": order["id"]}).status_code == 409
    assert balance(customer) == "100.00"  # the refused spend took nothing
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "60.00", "order_id": order["id"]}).status_code == 200
    payment = pay(customer, order["id"]).get_json()
    assert payment["amount"] == "0.00"


def test_two_concurrent_spends_of_the_whole_balance_one_wins(app, backend, customer):
    """Each thread has its own app context and so its own session and connection.

    On SQLite the writers are serialised by the database lock (busy_timeout), and the
    conditional UPDATE still decides; on PostgreSQL the second UPDATE waits on the row
    lock and re-checks ``balance >= amount`` after the first commits.
    """
    create_promo(app, "ALL50", "50")
    customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "ALL50"})
    user_id = customer.user["id"]
    barrier = threading.Barrier(2)
    results: list[str] = []
    errors: list[BaseException] = []

    def spend_all() -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=10)
                try:
                    bonuses.spend(user_id, Decimal("50.00"))
                    results.append("ok")
                except bonuses.InsufficientFunds:
                    results.append("409")
                finally:
                    db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    for _ in range(5):  # a few rounds, so a lucky schedule does not pass by accident
        threads = [threading.Thread(target=spend_all) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert sorted(results) == ["409", "ok"], (backend, results)
        results.clear()
        db.session.expire_all()
        assert balance(customer) == "0.00"
        # Top up for the next round, straight through the service (a promo is once per user).
        bonuses._give(user_id, Decimal("50.00"))
        db.session.add(BonusEntry(user_id=user_id, kind="accrual", amount=Decimal("50.00")))
        db.session.commit()
    assert ledger_sums_to_balance(user_id)


def test_concurrent_spend_and_payment_cannot_both_count(app, backend, staff, customer):
    """A spend against an order racing its payment: either the payment charges less, or
    the spend is refused; never full payment and bonus taken too."""
    create_promo(app, "P100", "100")
    customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "P100"})
    order = order_costing(staff, customer, "1000.00")
    user_id, order_id = customer.user["id"], order["id"]
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def spend() -> None:
        with app.app_context():
            barrier.wait(timeout=10)
            try:
                outcome["spend"] = bonuses.spend(user_id, Decimal("100.00"), order_id)["balance"]
            except bonuses.Conflict as exc:
                outcome["spend"] = exc
            finally:
                db.session.remove()

    def payment() -> None:
        from services import payments

        with app.app_context():
            barrier.wait(timeout=10)
            try:
                outcome["pay"] = payments.pay_order(user_id, order_id, "card").payment["amount"]
            except payments.Conflict as exc:
                outcome["pay"] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=spend), threading.Thread(target=payment)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.session.expire_all()
    final = customer.get(f"/api/v1/orders/{order_id}").get_json()
    spent = isinstance(outcome["spend"], Decimal)
    paid_amount = outcome["pay"] if isinstance(outcome["pay"], Decimal) else None
    if paid_amount is not None:
        assert paid_amount + Decimal(final["bonus_spent"]) == Decimal("1000.00"), outcome
    assert balance(customer) == ("0.00" if spent else "100.00")
    assert Decimal(final["bonus_spent"]) == (Decimal("100.00") if spent else Decimal("0.00"))
    assert ledger_sums_to_balance(user_id)


# --- ownership -------------------------------------------------------------------------------


def test_customers_never_see_anothers_bonuses(app, staff, customer, other_customer):
    paid(staff, customer, "4500.00")
    drain_outbox()
    assert balance(other_customer) == "0.00"
    assert other_customer.get(ME).get_json()["entries"] == []
    url = f"/api/v1/bonuses/users/{customer.user['id']}"
    assert other_customer.get(url).status_code == 404
    assert customer.get(url).get_json()["balance"] == "45.00"
    assert staff.get(url).get_json()["balance"] == "45.00"
    assert staff.get(f"/api/v1/bonuses/users/{uuid.uuid4()}").status_code == 404
    assert customer.get(ME, headers={"Authorization": ""}).status_code == 401


def test_cancelling_an_order_gives_back_the_bonus_spent_on_it(app, staff, customer):
    create_promo(app, "P100", "100")
    customer.post("/api/v1/bonuses/promocodes/apply", json={"code": "P100"})
    order = order_costing(staff, customer, "500.00")
    customer.post("/api/v1/bonuses/spend", json={"amount": "70.00", "order_id": order["id"]})
    assert balance(customer) == "30.00"
    assert staff.patch(f"/api/v1/orders/{order['id']}/status", json={"status": "cancelled"}).status_code == 200
    account = customer.get(ME).get_json()
    assert account["balance"] == "100.00"
    assert account["entries"][0]["kind"] == "reversal"
    assert account["entries"][0]["amount"] == "70.00" and account["entries"][0]["order_id"] == order["id"]
    assert ledger_sums_to_balance(customer.user["id"])
    # No more bonus can go onto the cancelled order.
    assert customer.post("/api/v1/bonuses/spend", json={"amount": "1.00", "order_id": order["id"]}).status_code == 409
