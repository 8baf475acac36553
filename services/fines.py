"""Traffic fines: staff issue them against a plate; the plate's owner (or staff) pays.

A customer sees the fines of the plates of the cars they own, and nothing else: a fine
of someone else's plate is "not found", never "forbidden", so that a plate number
cannot be probed for fines. Paying is one conditional UPDATE (``WHERE paid_at IS
NULL``): of two concurrent payments exactly one changes the row, the other is a 409.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select, update

from extensions import db
from models.base import utcnow
from models.cars import Car
from models.fines import Fine
from services.errors import Conflict, NotFound
from services.events import record_event
from services.pagination import Page, paginate

# routing key -> handler, for the queue this area consumes (see services/handlers.py).
# fine.issued and fine.paid are bound to no queue yet (messaging/topology.py), so
# nothing here consumes them.
HANDLERS: dict[str, Callable[[Any], None]] = {}
# event type -> handler that writes notifications
NOTIFICATIONS: dict[str, Callable[[Any], None]] = {}


@dataclass(frozen=True)
class Viewer:
    """Who is asking: a customer sees only the plates of their own cars."""

    user_id: str
    staff: bool = False


def normalise_plate(plate: str) -> str:
    """Plates compare as cars store them: trimmed, upper-case."""
    return plate.strip().upper()


def snapshot(fine: Fine) -> dict[str, Any]:
    """The fine as plain data: what the API shows and the events carry."""
    return {
        "id": fine.id,
        "license_plate": fine.license_plate,
        "amount": fine.amount,
        "reason": fine.reason,
        "issued_at": fine.issued_at,
        "issued_by": fine.issued_by,
        "status": "paid" if fine.paid_at is not None else "unpaid",
        "paid_at": fine.paid_at,
        "paid_by": fine.paid_by,
        "created_at": fine.created_at,
    }


def etag(fine: dict[str, Any]) -> str:
    """A fine changes once (unpaid → paid), so its state is its version."""
    return f'"{fine["id"]}.{fine["status"]}"'


def issue_fine(license_plate: str, amount: Decimal, reason: str, issued_at: datetime, issued_by: str) -> dict[str, Any]:
    """Record a fine against a plate; the plate need not belong to a known car yet."""
    fine = Fine(
        license_plate=normalise_plate(license_plate),
        amount=amount,
        reason=reason.strip(),
        issued_at=issued_at,
        issued_by=issued_by,
    )
    db.session.add(fine)
    db.session.flush()
    data = snapshot(fine)
    record_event("fine.issued", fine.id, data)
    db.session.commit()
    return data


def list_fines(
    viewer: Viewer, page: int, size: int, license_plate: str | None = None, paid: bool | None = None
) -> Page:
    """Fines newest first; a customer's list is limited to their cars' plates.

    A customer asking for another's plate gets an empty page, exactly as for a plate
    without fines, so the answer says nothing about other people's cars.
    """
    query = _visible(viewer)
    if license_plate is not None:
        query = query.where(Fine.license_plate == normalise_plate(license_plate))
    if paid is not None:
        query = query.where(Fine.paid_at.is_not(None) if paid else Fine.paid_at.is_(None))
    result = paginate(query.order_by(Fine.issued_at.desc(), Fine.id.desc()), page, size)
    return Page(items=[snapshot(fine) for fine in result.items], page=page, size=size, total=result.total)


def get_fine(viewer: Viewer, fine_id: str) -> dict[str, Any]:
    return snapshot(_load_visible(viewer, fine_id))


def pay_fine(viewer: Viewer, fine_id: str) -> dict[str, Any]:
    """Mark a fine paid, once: 404 if the viewer cannot see it, 409 if already paid."""
    fine = _load_visible(viewer, fine_id)  # someone else's fine is "not found", not "paid"
    paid_at = utcnow()
    changed = db.session.execute(
        update(Fine)
        .where(Fine.id == fine_id, Fine.paid_at.is_(None))
        .values(paid_at=paid_at, paid_by=viewer.user_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        db.session.rollback()
        raise Conflict(f"fine {fine_id} is already paid")
    db.session.refresh(fine)
    data = snapshot(fine)
    record_event("fine.paid", fine.id, data)
    db.session.commit()
    return data


def _load_visible(viewer: Viewer, fine_id: str) -> Fine:
    fine = db.session.scalar(_visible(viewer).where(Fine.id == fine_id))
    if fine is None:
        raise NotFound(f"fine {fine_id} not found")
    return fine


def _visible(viewer: Viewer) -> Select:
    """Staff see every fine; a customer the fines of plates on cars they own now."""
    query = select(Fine)
    if not viewer.staff:
        own_plates = select(Car.license_plate).where(Car.owner_id == viewer.user_id, Car.license_plate.is_not(None))
        query = query.where(Fine.license_plate.in_(own_plates))
    return query
