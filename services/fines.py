"""Traffic fines: staff issue them against a plate; the plate's owner (or staff) pays.

A customer sees the fines of the plates of the cars they own, and nothing else: a fine
of someone else's plate is "not found", never "forbidden", so that a plate number
cannot be probed for fines. Paying is one conditional UPDATE (``WHERE paid_at IS
NULL``): of two concurrent payments exactly one changes the row, the other is a 409.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select, union_all, update

from extensions import db
from models.base import utcnow
from models.cars import Car
from models.fines import Fine
from services.errors import Conflict, NotFound
from services.events import record_event
from services.notifications import notify
from services.pagination import Page, paginate

if TYPE_CHECKING:
    from services.handlers import Event

NEWEST_FIRST = (Fine.issued_at.desc(), Fine.id.desc())
# Up to this many rows per plate the per-plate merge beats one sort of all the fines.
MERGE_LIMIT = 1000
MERGE_MAX_PLATES = 100  # one UNION ALL branch each (SQLite allows 500)


@dataclass(frozen=True)
class Viewer:
    """Who is asking: a customer sees only the plates of their own cars."""

    user_id: str
    staff: bool = False


def is_uuid(value: str) -> bool:
    """Ids are UUIDs: anything else is "not found" without asking the database (which
    would refuse some strings, NUL for one, with an error instead of no rows)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


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
    filters = []
    if license_plate is not None:
        filters.append(Fine.license_plate == normalise_plate(license_plate))
    if paid is not None:
        filters.append(Fine.paid_at.is_not(None) if paid else Fine.paid_at.is_(None))
    query = query.where(*filters).order_by(*NEWEST_FIRST)
    if not viewer.staff and license_plate is None:
        plates = list(db.session.scalars(_own_plates(viewer.user_id)))
        if 1 < len(plates) <= MERGE_MAX_PLATES and page * size <= MERGE_LIMIT:
            return _merged_page(plates, filters, query, page, size)
    result = paginate(query, page, size)
    return Page(items=[snapshot(fine) for fine in result.items], page=page, size=size, total=result.total)


def _merged_page(plates: list[str], filters: list[Any], query: Select, page: int, size: int) -> Page:
    """A customer with many cars: the newest ``page * size`` of each plate, merged.

    The plain query reads every fine of every plate and sorts them (100,000 fines of a
    50-car fleet: tens of milliseconds); this reads at most ``page * size`` index
    entries per plate. Same rows, same order (``tests/test_fines.py`` checks both ways).
    """
    newest_per_plate = [
        select(Fine.id, Fine.issued_at)
        .where(Fine.license_plate == plate, *filters)
        .order_by(*NEWEST_FIRST)
        .limit(page * size)
        .subquery()
        for plate in plates
    ]
    merged = union_all(*(select(branch.c.id, branch.c.issued_at) for branch in newest_per_plate)).subquery()
    page_query = (
        select(Fine)
        .join(merged, Fine.id == merged.c.id)
        .order_by(merged.c.issued_at.desc(), merged.c.id.desc())
        .limit(size)
        .offset((page - 1) * size)
    )
    items = [snapshot(fine) for fine in db.session.scalars(page_query)]
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    return Page(items=items, page=page, size=size, total=total)


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
    fine = db.session.scalar(_visible(viewer).where(Fine.id == fine_id)) if is_uuid(fine_id) else None
    if fine is None:
        raise NotFound(f"fine {fine_id} not found")
    return fine


def _visible(viewer: Viewer) -> Select:
    """Staff see every fine; a customer the fines of plates on cars they own now."""
    query = select(Fine)
    if not viewer.staff:
        query = query.where(Fine.license_plate.in_(_own_plates(viewer.user_id)))
    return query


def _own_plates(user_id: str) -> Select:
    return select(Car.license_plate).where(Car.owner_id == user_id, Car.license_plate.is_not(None))


# --- event → notification rules (queue carhub.notifications) ---------------------------


def _notify_issued(event: Event) -> None:
    """Tell whoever owns a car with the fined plate now (nobody, if no car has it)."""
    data = event.data
    plate = normalise_plate(str(data.get("license_plate") or ""))
    for owner_id in db.session.scalars(select(Car.owner_id).where(Car.license_plate == plate).distinct()):
        notify(
            owner_id, event, f"A fine of {data.get('amount')} for {plate}", str(data.get("reason") or ""), event.subject
        )


NOTIFICATIONS: dict[str, Callable[[Event], None]] = {"fine.issued": _notify_issued}
