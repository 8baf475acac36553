"""Service orders: placed by a customer for a car, priced from the catalogue, moved
through their status machine by staff, reviewed once by the owner when done."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError

from extensions import db
from models.base import ZERO, utcnow
from models.cars import Car
from models.orders import Order, OrderLine, OrderReview
from services import bonuses, catalogue
from services.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from services.events import record_event
from services.notifications import notify
from services.pagination import Page, paginate

if TYPE_CHECKING:
    from services.handlers import Event

# What Numeric(12, 2) holds: beyond it the database would refuse the row.
MAX_TOTAL = Decimal("9999999999.99")

# status → the statuses it may move to; anything else is a 409.
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"confirmed", "cancelled"}),
    "confirmed": frozenset({"in_progress", "cancelled"}),
    "in_progress": frozenset({"done", "cancelled"}),
    "done": frozenset(),
    "cancelled": frozenset(),
}


@dataclass(frozen=True)
class Viewer:
    """Who is asking: customers see their own orders only (others are a 404)."""

    user_id: str
    is_staff: bool = False


def snapshot(order: Order) -> dict[str, Any]:
    """The order as plain data: what the API shows and the events carry."""
    return {
        "id": order.id,
        "user_id": order.user_id,
        "car_id": order.car_id,
        "status": order.status,
        "desired_time": order.desired_time,
        "description": order.description,
        "total": order.total,
        "bonus_spent": order.bonus_spent,
        "amount_due": ZERO if order.paid_at else order.amount_due,
        "paid": order.paid_at is not None,
        "paid_at": order.paid_at,
        "version": order.version,
        "lines": [
            {
                "code": line.code,
                "name": line.name,
                "kind": line.kind,
                "unit_price": line.unit_price,
                "qty": line.qty,
                "amount": line.amount,
            }
            for line in order.lines
        ],
        "review": (
            {"rating": order.review.rating, "comment": order.review.comment, "created_at": order.review.created_at}
            if order.review
            else None
        ),
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def add_order(
    user_id: str, car_id: str, desired_time: datetime, description: str, services: Iterable[Mapping[str, Any]]
) -> Order:
    """Add an order and its ``order.created`` event to the current transaction, uncommitted.

    For callers that place an order as part of a bigger change (the cart's checkout);
    ``create_order`` is the use case on its own.
    """
    if db.session.get(Car, car_id) is None:
        raise NotFound(f"car {car_id} not found")
    lines = catalogue.priced_lines(services)
    total = sum((line["amount"] for line in lines), start=ZERO)
    if total > MAX_TOTAL:
        raise InvalidInput(f"an order can total at most {MAX_TOTAL}", errors={"services": ["The total is too large."]})
    order = Order(
        user_id=user_id,
        car_id=car_id,
        desired_time=desired_time,
        description=description,
        total=total,
        lines=[OrderLine(position=index, **line) for index, line in enumerate(lines)],
    )
    db.session.add(order)
    db.session.flush()
    data = snapshot(order)
    record_event("order.created", order.id, _event_data(data))
    return order


def create_order(
    user_id: str, car_id: str, desired_time: datetime, description: str, services: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    order = add_order(user_id, car_id, desired_time, description, services)
    db.session.commit()
    return snapshot(order)


def get_order(order_id: str, viewer: Viewer) -> dict[str, Any]:
    return snapshot(load_visible(order_id, viewer))


def load_visible(order_id: str, viewer: Viewer) -> Order:
    """The order if ``viewer`` may see it; another customer's order is "not found"."""
    order = db.session.get(Order, order_id)
    if order is None or (not viewer.is_staff and order.user_id != viewer.user_id):
        raise NotFound(f"order {order_id} not found")
    return order


def list_orders(
    viewer: Viewer,
    page: int,
    size: int,
    *,
    status: str | None = None,
    car_id: str | None = None,
    user_id: str | None = None,
) -> Page:
    query: Select = select(Order)
    if not viewer.is_staff:
        query = query.where(Order.user_id == viewer.user_id)
    elif user_id:
        query = query.where(Order.user_id == user_id)
    if status:
        query = query.where(Order.status == status)
    if car_id:
        query = query.where(Order.car_id == car_id)
    result = paginate(query.order_by(Order.created_at.desc(), Order.id.desc()), page, size)
    return Page(items=[snapshot(order) for order in result.items], page=page, size=size, total=result.total)


def etag(order: dict[str, Any]) -> str:
    return f'"{order["id"]}.{order["version"]}"'


def change_status(order_id: str, new_status: str, if_match: str | None = None) -> dict[str, Any]:
    """Move an order along its machine; an illegal move, or a lost race, is a 409.

    The UPDATE is conditional on the status we read, so two staff moving the same
    order at once cannot both win (the loser sees the status the winner set). With
    ``If-Match`` the order must still be the version the caller read (else 412).
    Cancelling gives back the bonus spent on the order, in the same transaction.
    """
    order = db.session.get(Order, order_id)
    if order is None:
        raise NotFound(f"order {order_id} not found")
    if not matches(if_match, etag(snapshot(order))):
        db.session.rollback()
        raise PreconditionFailed("the order has changed since you read it; read it again")
    old_status = order.status
    if new_status not in TRANSITIONS[old_status]:
        raise Conflict(f"an order cannot go from {old_status} to {new_status}")
    changed = db.session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status == old_status)
        .values(status=new_status, updated_at=utcnow(), version=Order.version + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        db.session.rollback()
        raise Conflict(f"order {order_id} was changed concurrently; read it again")
    db.session.refresh(order)  # under our row lock: bonus spent on it is final now
    if new_status == "cancelled" and order.bonus_spent > 0:
        bonuses.give_back_spent_on_order(order.user_id, order.id, order.bonus_spent)
    record_event(
        "order.status_changed",
        order.id,
        {"order_id": order.id, "user_id": order.user_id, "from": old_status, "to": new_status, "total": order.total},
    )
    db.session.commit()
    return snapshot(order)


def review_order(order_id: str, viewer: Viewer, rating: int, comment: str | None) -> dict[str, Any]:
    """Once per order, by its owner, only when it is done (the primary key says once)."""
    order = db.session.get(Order, order_id)
    if order is None or order.user_id != viewer.user_id:
        raise NotFound(f"order {order_id} not found")
    if order.status != "done":
        raise Conflict(f"only a done order can be reviewed; this one is {order.status}")
    if order.review is not None:
        raise Conflict("this order has been reviewed already")
    db.session.add(OrderReview(order_id=order.id, user_id=viewer.user_id, rating=rating, comment=comment))
    record_event("order.reviewed", order.id, {"order_id": order.id, "user_id": order.user_id, "rating": rating})
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict("this order has been reviewed already") from exc
    db.session.refresh(order)
    return snapshot(order)


def matches(if_match: str | None, tag: str) -> bool:
    """``If-Match`` absent or ``*``, or one of its tags is ``tag``."""
    if if_match is None or if_match.strip() == "*":
        return True
    return tag in {part.strip().removeprefix("W/") for part in if_match.split(",")}


def _event_data(order: dict[str, Any]) -> dict[str, Any]:
    skip = ("id", "review", "version")
    return {"order_id": order["id"], **{key: value for key, value in order.items() if key not in skip}}


# --- event → notification rules (queue carhub.notifications, binding order.#) -----------

STATUS_WORDS = {
    "confirmed": "confirmed",
    "in_progress": "in progress",
    "done": "done: your car is ready",
    "cancelled": "cancelled",
}


def _notify_created(event: Event) -> None:
    data = event.data
    notify(data.get("user_id"), event, "Your order is placed", f"Total {data.get('total')}", data.get("order_id"))


def _notify_status_changed(event: Event) -> None:
    data = event.data
    to = str(data.get("to", ""))
    notify(data.get("user_id"), event, f"Your order is {STATUS_WORDS.get(to, to)}", "", data.get("order_id"))


def _notify_reviewed(event: Event) -> None:
    data = event.data
    notify(data.get("user_id"), event, "Thank you for your review", "", data.get("order_id"))


# The orders area consumes no work queue of its own.
HANDLERS: dict[str, Callable[[Event], None]] = {}
# Every order.* type this module emits has a rule here, so none is dead-lettered.
NOTIFICATIONS: dict[str, Callable[[Event], None]] = {
    "order.created": _notify_created,
    "order.status_changed": _notify_status_changed,
    "order.reviewed": _notify_reviewed,
}
