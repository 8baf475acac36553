"""A user's notifications: written by the consumer from events, read and marked over HTTP.

Each area adds its own event → notification rules to ``HANDLERS`` here; the inbox row
written by the consumer runtime makes each of them happen once per event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, exists, insert, select

from extensions import db
from models.base import new_id, utcnow
from models.notifications import Notification
from models.users import User
from services.errors import NotFound
from services.pagination import Page, paginate

if TYPE_CHECKING:
    from services.handlers import Event


_COLUMNS = ("id", "user_id", "kind", "title", "body", "reference", "event_id", "created_at")
# One statement per notification, the user's existence checked in it: a deleted user
# (or none) is simply not told. Built once; Core, so the consumer's batch has no ORM
# rows to flush for it.
_VALUES = {name: bindparam(name, type_=Notification.__table__.c[name].type) for name in _COLUMNS}
_NOTIFY_IF_THE_USER_EXISTS = insert(Notification.__table__).from_select(
    _COLUMNS,
    select(*_VALUES.values()).where(exists().where(User.__table__.c.id == _VALUES["user_id"])),
)


def notify(user_id: str | None, event: Event, title: str, body: str = "", reference: str | None = None) -> None:
    """Tell ``user_id`` about ``event`` (nobody to tell, or a deleted user: nothing)."""
    if not user_id:
        return
    db.session.execute(
        _NOTIFY_IF_THE_USER_EXISTS,
        {
            "id": new_id(),
            "user_id": user_id,
            "kind": event.type,
            "title": title,
            "body": body,
            "reference": reference or event.subject,
            "event_id": event.id,
            "created_at": utcnow(),
        },
    )


def list_for_user(user_id: str, page: int, size: int, unread_only: bool = False) -> Page:
    query = select(Notification).where(Notification.user_id == user_id)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    return paginate(query.order_by(Notification.created_at.desc(), Notification.id.desc()), page, size)


def mark_read(user_id: str, notification_id: str) -> Notification:
    notification = db.session.get(Notification, notification_id)
    if notification is None or notification.user_id != user_id:
        raise NotFound(f"notification {notification_id} not found")
    if notification.read_at is None:
        notification.read_at = utcnow()
        db.session.commit()
    return notification


# --- event → notification rules --------------------------------------------------------


def _on_car_event(verb: str) -> Callable[[Event], None]:
    def handle(event: Event) -> None:
        car = event.data
        name = f"{car.get('make', '')} {car.get('model', '')}".strip() or "your car"
        notify(car.get("owner_id"), event, f"{name} was {verb}", f"VIN {car.get('vin', '?')}", car.get("id"))

    return handle


HANDLERS: dict[str, Callable[[Event], None]] = {
    "car.created": _on_car_event("registered"),
    "car.updated": _on_car_event("updated"),
    "car.deleted": _on_car_event("removed"),
}
