"""The priced catalogue of services and parts: read by anyone (cached), edited by staff.

Orders price their lines from here at order time (``priced_lines``) and keep the copy,
so a later price change never alters an order already placed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from extensions import db
from models.catalogue import CatalogueItem
from services import cache
from services.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from services.pagination import Page, paginate
from services.uniqueness import taken_field

LIST_NAMESPACE = "catalogue:list"

# What exists from the start; ``seed_catalogue`` inserts what is missing and never
# overwrites a price staff have changed since.
DEFAULT_ITEMS: tuple[dict[str, Any], ...] = (
    {"code": "washing", "name": "Exterior and interior wash", "price": "1500.00"},
    {"code": "polishing", "name": "Machine polishing", "price": "6000.00"},
    {"code": "detailing", "name": "Full detailing", "price": "15000.00"},
    {"code": "oil_change", "name": "Engine oil and filter change (labour)", "price": "2500.00"},
    {"code": "diagnostics", "name": "Computer diagnostics", "price": "3000.00"},
    {"code": "tire_change", "name": "Seasonal tyre change, four wheels", "price": "4000.00"},
    {"code": "brake_service", "name": "Brake pads replacement (labour, per axle)", "price": "3500.00"},
    {"code": "wheel_alignment", "name": "Wheel alignment", "price": "3200.00"},
    {"code": "oil_5w30_4l", "name": "Engine oil 5W-30, 4 l", "kind": "part", "sku": "OIL-5W30-4L", "price": "3900.00"},
    {"code": "oil_filter", "name": "Oil filter", "kind": "part", "sku": "OIL-FILTER-STD", "price": "650.00"},
    {"code": "air_filter", "name": "Air filter", "kind": "part", "sku": "AIR-FILTER-STD", "price": "900.00"},
    {"code": "brake_pads_front", "name": "Front brake pads", "kind": "part", "sku": "BRAKE-PADS-F", "price": "4200.00"},
    {"code": "wiper_blades", "name": "Wiper blades, pair", "kind": "part", "sku": "WIPER-PAIR", "price": "1800.00"},
)


def snapshot(item: CatalogueItem) -> dict[str, Any]:
    """The item as plain data: what the cache holds and the API shows."""
    return {column.key: getattr(item, column.key) for column in CatalogueItem.__table__.columns}


def item_key(code: str) -> str:
    return f"catalogue:item:{code}"


def list_items(
    page: int, size: int, *, kind: str | None = None, q: str | None = None, include_inactive: bool = False
) -> Page:
    """Cached per generation: any edit starts a new one, so a list never goes stale."""
    params = json.dumps([kind, q, include_inactive, page, size])
    key = hashlib.blake2b(params.encode(), digest_size=16).hexdigest()

    def load() -> dict[str, Any]:
        query = select(CatalogueItem)
        if not include_inactive:
            query = query.where(CatalogueItem.active.is_(True))
        if kind:
            query = query.where(CatalogueItem.kind == kind)
        if q:
            like = f"%{q}%"
            query = query.where(
                or_(CatalogueItem.code.ilike(like), CatalogueItem.name.ilike(like), CatalogueItem.sku.ilike(like))
            )
        result = paginate(query.order_by(CatalogueItem.kind.desc(), CatalogueItem.code, CatalogueItem.id), page, size)
        return {**result.as_dict(), "items": [snapshot(item) for item in result.items]}

    return Page(**cache.cached_in_generation(LIST_NAMESPACE, key, load))


def get_item(code: str) -> dict[str, Any]:
    def load() -> dict[str, Any] | None:
        item = db.session.scalar(select(CatalogueItem).where(CatalogueItem.code == code))
        return snapshot(item) if item else None

    found = cache.cached(item_key(code), load)
    if found is None:
        raise NotFound(f"catalogue item {code} not found")
    return found


def create_item(fields: dict[str, Any]) -> dict[str, Any]:
    _check_unique(fields)
    _check_sku(fields.get("kind", "service"), fields.get("sku"))
    item = CatalogueItem(**fields)
    db.session.add(item)
    _commit(item.code)
    return snapshot(item)


def etag(item: dict[str, Any]) -> str:
    return f'"{item["id"]}.{item["version"]}"'


def update_item(code: str, fields: dict[str, Any], if_match: str | None = None) -> dict[str, Any]:
    item = db.session.scalar(select(CatalogueItem).where(CatalogueItem.code == code))
    if item is None:
        raise NotFound(f"catalogue item {code} not found")
    if if_match is not None and if_match.strip() != "*" and etag(snapshot(item)) not in _tags(if_match):
        db.session.rollback()
        raise PreconditionFailed("the item has changed since you read it; read it again")
    _check_unique(fields, exclude_id=item.id)
    _check_sku(fields.get("kind", item.kind), fields.get("sku", item.sku))
    for name, value in fields.items():
        setattr(item, name, value)
    _commit(code, item.code)
    return snapshot(item)


def priced_lines(requested: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{code, qty}]`` → lines with the current name, kind and price copied in.

    The same code twice is one line with the quantities added. Unknown or withdrawn
    codes are a 422 naming each of them, read straight from the database (no cache):
    the price charged must be the price of this moment.
    """
    quantities: dict[str, int] = {}
    for line in requested:
        quantities[line["code"]] = quantities.get(line["code"], 0) + int(line["qty"])
    items = {
        item.code: item
        for item in db.session.scalars(
            select(CatalogueItem).where(CatalogueItem.code.in_(quantities), CatalogueItem.active.is_(True))
        )
    }
    unknown = [code for code in quantities if code not in items]
    if unknown:
        raise InvalidInput(
            f"unknown service code(s): {', '.join(sorted(unknown))}",
            errors={"services": [f"Unknown code {code!r}." for code in sorted(unknown)]},
        )
    lines = []
    for code, qty in quantities.items():
        item = items[code]
        price = Decimal(item.price).quantize(Decimal("0.01"))
        lines.append(
            {"code": code, "name": item.name, "kind": item.kind, "unit_price": price, "qty": qty, "amount": price * qty}
        )
    return lines


def seed_catalogue() -> None:
    """Insert the default items that are missing (idempotent; the caller commits)."""
    present = set(db.session.scalars(select(CatalogueItem.code)))
    missing = [item for item in DEFAULT_ITEMS if item["code"] not in present]
    for item in missing:
        db.session.add(CatalogueItem(**{**item, "price": Decimal(item["price"])}))
    if missing:
        db.session.flush()
        cache.bump_after_commit(LIST_NAMESPACE)


def _tags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",")}


def _check_sku(kind: str, sku: str | None) -> None:
    if kind != "part" and sku:
        raise InvalidInput("only parts have a sku", errors={"sku": ["Only parts (kind=part) have a sku."]})


def _check_unique(fields: dict[str, Any], exclude_id: str | None = None) -> None:
    """The clear message; the UNIQUE constraints still decide under concurrency."""
    name = taken_field(CatalogueItem, fields, ("code", "sku"), exclude_id)
    if name:
        raise Conflict(
            f"a catalogue item with {name} {fields[name]} already exists", errors={name: ["Already exists."]}
        )


def _commit(*codes: str) -> None:
    cache.invalidate_after_commit(*(item_key(code) for code in codes))
    cache.bump_after_commit(LIST_NAMESPACE)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict("a catalogue item with this code or sku already exists") from exc
    except StaleDataError as exc:
        db.session.rollback()
        raise PreconditionFailed("the item was changed concurrently; read it again") from exc


# The catalogue consumes no queue and writes no notifications.
HANDLERS: dict[str, Callable[[Any], None]] = {}
NOTIFICATIONS: dict[str, Callable[[Any], None]] = {}
