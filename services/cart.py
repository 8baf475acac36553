"""A user's cart: lines of catalogue codes, shown at today's prices, checked out as an order.

Adding is an upsert on (user, code), so adding the same code twice, even from two
requests at once, gives one line with both quantities. Checkout claims the lines
(a DELETE conditional on the quantities it read), places the order through the orders
service in the same transaction and commits once: an order exists if and only if the
cart was emptied, and a failed checkout leaves the cart as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from extensions import db
from models.base import ZERO, new_id, utcnow
from models.cart import MAX_LINE_QTY, CartItem
from services import catalogue, orders
from services.errors import Conflict, InvalidInput, NotFound, PreconditionFailed

# The cart consumes no queue and writes no notifications.
HANDLERS: dict[str, Callable[[Any], None]] = {}
NOTIFICATIONS: dict[str, Callable[[Any], None]] = {}


def get_cart(user_id: str) -> dict[str, Any]:
    """``{items: [{id, code, name, qty, price, amount, available}], total}`` at current prices.

    A line whose catalogue item has been withdrawn stays visible (``available: false``)
    but counts for nothing in the total; checkout refuses it until it is removed.
    """
    lines = [_priced(item) for item in _lines(user_id)]
    total = sum((line["amount"] for line in lines if line["available"]), start=ZERO)
    return {"items": lines, "total": total}


def add_item(user_id: str, code: str, qty: int) -> dict[str, Any]:
    """Put ``qty`` of ``code`` in the cart, on top of what is there already."""
    offer = _offer(code)
    if offer is None or not offer["active"]:
        raise InvalidInput(f"unknown catalogue code {code!r}", errors={"code": [f"Unknown code {code!r}."]})
    now = utcnow()
    table = CartItem.__table__
    insert = _insert_for_dialect()(table).values(
        id=new_id(), user_id=user_id, code=offer["code"], qty=qty, version=1, created_at=now, updated_at=now
    )
    upsert = insert.on_conflict_do_update(
        index_elements=["user_id", "code"],
        set_={"qty": table.c.qty + insert.excluded.qty, "version": table.c.version + 1, "updated_at": now},
        # Over the limit: no row changes (and none is returned) instead of a CHECK error.
        where=table.c.qty + insert.excluded.qty <= MAX_LINE_QTY,
    ).returning(table.c.id)
    try:
        item_id = db.session.execute(upsert).scalar_one_or_none()
    except IntegrityError as exc:  # the code was withdrawn or renamed between read and write
        db.session.rollback()
        raise InvalidInput(f"unknown catalogue code {code!r}", errors={"code": [f"Unknown code {code!r}."]}) from exc
    if item_id is None:
        db.session.rollback()
        raise Conflict(f"a cart line holds at most {MAX_LINE_QTY} of one code", errors={"qty": ["Too many."]})
    db.session.commit()
    return _priced(_load(user_id, item_id))


def etag(line: dict[str, Any]) -> str:
    return f'"{line["id"]}.{line["version"]}"'


def set_quantity(user_id: str, item_id: str, qty: int, if_match: str | None = None) -> dict[str, Any]:
    """Replace a line's quantity (another user's line is "not found"; honours If-Match)."""
    condition = _change_condition(user_id, item_id, if_match)
    changed = db.session.execute(
        update(CartItem)
        .where(*condition)
        .values(qty=qty, version=CartItem.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    _check_changed(changed, item_id, if_match)
    db.session.commit()
    return _priced(_load(user_id, item_id))


def remove_item(user_id: str, item_id: str, if_match: str | None = None) -> None:
    """Remove one line; another user's line is "not found", never "forbidden"."""
    condition = _change_condition(user_id, item_id, if_match)
    removed = db.session.execute(
        delete(CartItem).where(*condition).execution_options(synchronize_session=False)
    ).rowcount
    _check_changed(removed, item_id, if_match)
    db.session.commit()


def clear(user_id: str) -> None:
    db.session.execute(delete(CartItem).where(CartItem.user_id == user_id))
    db.session.commit()


def checkout(user_id: str, car_id: str, desired_time: datetime, description: str = "") -> dict[str, Any]:
    """Turn the cart into an order (prices copied now) and empty it, in one transaction.

    409 for an empty cart, for withdrawn items and for a cart changed (or checked out)
    by a concurrent request; any failure of the order (unknown car, ...) rolls back the
    emptying too, so the cart is left exactly as it was.
    """
    items = _lines(user_id)
    if not items:
        raise Conflict("the cart is empty")
    withdrawn = [item.code for item in items if not (_offer(item.code) or {}).get("active")]
    if withdrawn:
        raise Conflict(
            f"no longer available: {', '.join(withdrawn)}; remove them from the cart",
            errors={"items": [f"Code {code!r} is no longer available." for code in withdrawn]},
        )
    try:
        _claim(items)
        order = orders.add_order(
            user_id, car_id, desired_time, description, [{"code": item.code, "qty": item.qty} for item in items]
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return orders.snapshot(order)


def _claim(items: list[CartItem]) -> None:
    """Delete exactly the lines we read, at the versions we read.

    On PostgreSQL a concurrent checkout of the same cart waits on these row locks and
    then deletes nothing; a concurrent add or edit raised a version. Either way: 409,
    and the caller rolls back, so nothing is done.
    """
    claimed = 0
    for item in items:
        claimed += db.session.execute(
            delete(CartItem)
            .where(CartItem.id == item.id, CartItem.version == item.version)
            .execution_options(synchronize_session=False)
        ).rowcount
    if claimed != len(items):
        raise Conflict("the cart changed during checkout; look at it again and retry")


def _lines(user_id: str) -> list[CartItem]:
    query = select(CartItem).where(CartItem.user_id == user_id).order_by(CartItem.created_at, CartItem.id)
    return list(db.session.scalars(query))


def _change_condition(user_id: str, item_id: str, if_match: str | None) -> list[Any]:
    """WHERE of a change: the caller's line, and with If-Match the version they saw.

    The version is checked in the UPDATE/DELETE itself, so a change that lands between
    our read and our write cannot be overwritten unseen.
    """
    if not _is_uuid(item_id):
        raise NotFound(f"cart item {item_id} not found")
    condition = [CartItem.id == item_id, CartItem.user_id == user_id]
    if if_match is None or if_match.strip() == "*":
        return condition
    item = _load(user_id, item_id)
    tags = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if etag({"id": item.id, "version": item.version}) not in tags:
        db.session.rollback()
        raise PreconditionFailed("the cart line has changed since you read it; read it again")
    return [*condition, CartItem.version == item.version]


def _check_changed(rowcount: int, item_id: str, if_match: str | None) -> None:
    if rowcount == 1:
        return
    db.session.rollback()
    if if_match is not None and if_match.strip() != "*":
        raise PreconditionFailed(f"cart item {item_id} was changed concurrently; read it again")
    raise NotFound(f"cart item {item_id} not found")


def _load(user_id: str, item_id: str) -> CartItem:
    item = db.session.scalar(select(CartItem).where(CartItem.id == item_id, CartItem.user_id == user_id))
    if item is None:
        raise NotFound(f"cart item {item_id} not found")
    return item


def _offer(code: str) -> dict[str, Any] | None:
    """The catalogue's current entry for ``code`` (cached there, invalidated on change)."""
    try:
        return catalogue.get_item(code)
    except NotFound:
        return None


def _priced(item: CartItem) -> dict[str, Any]:
    offer = _offer(item.code)
    available = bool(offer and offer["active"])
    price = Decimal(offer["price"]).quantize(Decimal("0.01")) if offer else None
    return {
        "id": item.id,
        "code": item.code,
        "name": offer["name"] if offer else None,
        "qty": item.qty,
        "version": item.version,
        "price": price,
        "amount": price * item.qty if price is not None else None,
        "available": available,
        "added_at": item.created_at,
    }


def _is_uuid(value: str) -> bool:
    """Line ids are UUIDs: anything else is "not found" without asking the database."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _insert_for_dialect() -> Callable[..., Any]:
    """``INSERT ... ON CONFLICT DO UPDATE`` is spelled the same on both databases."""
    name = db.session.get_bind().dialect.name
    return postgresql.insert if name == "postgresql" else sqlite.insert
