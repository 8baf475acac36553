"""Payments: the owner pays what is left of an order's total; staff refund.

The amount always comes from the order (its total less bonus spent on it), never from
the client. One succeeded payment per order is a partial unique index; a conditional
UPDATE on ``orders.paid_at`` settles a race with a concurrent bonus spend. An
``Idempotency-Key`` is stored on the payment it created, so a retry is answered from
the database with the first result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from extensions import db
from models.base import utcnow
from models.orders import Order
from models.payments import Payment
from services.errors import Conflict, InvalidInput, NotFound
from services.events import record_event
from services.notifications import notify
from services.orders import Viewer
from services.pagination import Page, paginate

if TYPE_CHECKING:
    from services.handlers import Event


@dataclass(frozen=True)
class PaymentResult:
    """The payment, and whether this call created it or replayed an earlier one."""

    payment: dict[str, Any]
    replayed: bool = False


def snapshot(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "order_id": payment.order_id,
        "user_id": payment.user_id,
        "amount": payment.amount,
        "method": payment.method,
        "status": payment.status,
        "created_at": payment.created_at,
        "refunded_at": payment.refunded_at,
    }


def pay_order(user_id: str, order_id: str, method: str, idempotency_key: str | None = None) -> PaymentResult:
    """Pay an order of ``user_id`` in full (what bonus spending left of it)."""
    if idempotency_key:
        earlier = _by_key(user_id, idempotency_key)
        if earlier is not None:
            return _replay(earlier, order_id, method)
    order = db.session.get(Order, order_id)
    if order is None or order.user_id != user_id:
        raise NotFound(f"order {order_id} not found")
    if order.status == "cancelled":
        raise Conflict("a cancelled order cannot be paid")
    if order.paid_at is not None:
        raise Conflict(f"order {order_id} is already paid")
    amount, seen_bonus = order.amount_due, order.bonus_spent
    now = utcnow()
    # Settle the order only if nobody paid it, cancelled it or spent bonus on it since
    # we read it; otherwise the amount we computed could be wrong.
    settled = db.session.execute(
        update(Order)
        .where(
            Order.id == order_id,
            Order.paid_at.is_(None),
            Order.bonus_spent == seen_bonus,
            Order.status != "cancelled",
        )
        .values(paid_at=now, updated_at=now, version=Order.version + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if settled != 1:
        db.session.rollback()
        return _lost_race(user_id, order_id, method, idempotency_key)
    payment = Payment(order_id=order_id, user_id=user_id, amount=amount, method=method, idempotency_key=idempotency_key)
    db.session.add(payment)
    db.session.flush()
    record_event("payment.succeeded", payment.id, _event_data(payment))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return _lost_race(user_id, order_id, method, idempotency_key)
    return PaymentResult(snapshot(payment))


def etag(payment: dict[str, Any]) -> str:
    """A payment changes once (succeeded → refunded): its status is its version."""
    return f'"{payment["id"]}.{payment["status"]}"'


def _lost_race(user_id: str, order_id: str, method: str, idempotency_key: str | None) -> PaymentResult:
    """Someone else changed the order first: the same key's twin, or a real conflict."""
    if idempotency_key:
        earlier = _by_key(user_id, idempotency_key)
        if earlier is not None:
            return _replay(earlier, order_id, method)
    raise Conflict(f"order {order_id} is already paid or was changed meanwhile; read it again")


def _by_key(user_id: str, key: str) -> Payment | None:
    return db.session.scalar(select(Payment).where(Payment.user_id == user_id, Payment.idempotency_key == key))


def _replay(earlier: Payment, order_id: str, method: str) -> PaymentResult:
    if earlier.order_id != order_id or earlier.method != method:
        raise InvalidInput(
            "this Idempotency-Key was used for a different payment",
            errors={"Idempotency-Key": ["Already used with a different order_id or method."]},
        )
    return PaymentResult(snapshot(earlier), replayed=True)


def get_payment(payment_id: str, viewer: Viewer) -> dict[str, Any]:
    payment = db.session.get(Payment, payment_id)
    if payment is None or (not viewer.is_staff and payment.user_id != viewer.user_id):
        raise NotFound(f"payment {payment_id} not found")
    return snapshot(payment)


def list_payments(viewer: Viewer, page: int, size: int, *, order_id: str | None = None) -> Page:
    query = select(Payment)
    if not viewer.is_staff:
        query = query.where(Payment.user_id == viewer.user_id)
    if order_id:
        query = query.where(Payment.order_id == order_id)
    result = paginate(query.order_by(Payment.created_at.desc(), Payment.id.desc()), page, size)
    return Page(items=[snapshot(payment) for payment in result.items], page=page, size=size, total=result.total)


def refund_payment(payment_id: str) -> dict[str, Any]:
    """Refund a succeeded payment (staff); the bonus consumer reverses its accrual."""
    payment = db.session.get(Payment, payment_id)
    if payment is None:
        raise NotFound(f"payment {payment_id} not found")
    if payment.status != "succeeded":
        raise Conflict(f"only a succeeded payment can be refunded; this one is {payment.status}")
    now = utcnow()
    refunded = db.session.execute(
        update(Payment)
        .where(Payment.id == payment_id, Payment.status == "succeeded")
        .values(status="refunded", refunded_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if refunded != 1:
        db.session.rollback()
        raise Conflict(f"payment {payment_id} was refunded concurrently")
    db.session.execute(
        update(Order)
        .where(Order.id == payment.order_id)
        .values(paid_at=None, updated_at=now, version=Order.version + 1)
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(payment)
    record_event("payment.refunded", payment.id, _event_data(payment))
    db.session.commit()
    return snapshot(payment)


def _event_data(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.id,
        "order_id": payment.order_id,
        "user_id": payment.user_id,
        "amount": payment.amount,
        "method": payment.method,
        "status": payment.status,
    }


# --- event → notification rules (queue carhub.notifications) ---------------------------


def _notify_succeeded(event: Event) -> None:
    data = event.data
    notify(data.get("user_id"), event, f"Payment of {data.get('amount')} received", "", data.get("order_id"))


# Payments consume no work queue; the bonus account reacts to their events.
HANDLERS: dict[str, Callable[[Event], None]] = {}
NOTIFICATIONS: dict[str, Callable[[Event], None]] = {"payment.succeeded": _notify_succeeded}
