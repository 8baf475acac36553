"""The fleet: create, read (cached), change and delete cars, each change an event."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from extensions import db
from models.cars import Car
from services import cache, users
from services.errors import Conflict, DomainError, InvalidInput, NotFound, PreconditionFailed
from services.events import record_event
from services.pagination import Page, paginate
from services.rows import insert_row
from services.uniqueness import taken_field

SORTABLE = ("year", "make", "model", "price", "mileage_km", "created_at", "updated_at", "status")
LIST_NAMESPACE = "cars:list"


def car_key(car_id: str) -> str:
    return f"car:{car_id}"


def snapshot(car: Car) -> dict[str, Any]:
    """The car as plain data: what the cache holds, the API shows and events carry."""
    return {column.key: getattr(car, column.key) for column in Car.__table__.columns}


def etag(car: dict[str, Any]) -> str:
    return f'"{car["id"]}.{car["version"]}"'


def get_car(car_id: str) -> dict[str, Any]:
    def load() -> dict[str, Any] | None:
        car = db.session.get(Car, car_id)
        return snapshot(car) if car else None

    found = cache.cached(car_key(car_id), load)
    if found is None:
        raise NotFound(f"car {car_id} not found")
    return found


@dataclass(frozen=True)
class CarFilters:
    make: str | None = None
    model: str | None = None
    status: str | None = None
    year_from: int | None = None
    year_to: int | None = None
    owner_id: str | None = None
    q: str | None = None
    sort: tuple[str, ...] = ()


def list_cars(filters: CarFilters, page: int, size: int) -> Page:
    """Cached per generation: a write starts a new generation, so no list goes stale."""
    params = json.dumps([filters.__dict__, page, size], sort_keys=True, default=str)
    key = hashlib.blake2b(params.encode(), digest_size=16).hexdigest()

    def load() -> dict[str, Any]:
        result = paginate(_filtered(filters), page, size)
        return {**result.as_dict(), "items": [snapshot(car) for car in result.items]}

    return Page(**cache.cached_in_generation(LIST_NAMESPACE, key, load))


def _filtered(filters: CarFilters) -> Select:
    query = select(Car)
    if filters.make:
        query = query.where(Car.make.ilike(filters.make))
    if filters.model:
        query = query.where(Car.model.ilike(filters.model))
    if filters.status:
        query = query.where(Car.status == filters.status)
    if filters.year_from is not None:
        query = query.where(Car.year >= filters.year_from)
    if filters.year_to is not None:
        query = query.where(Car.year <= filters.year_to)
    if filters.owner_id:
        query = query.where(Car.owner_id == filters.owner_id)
    if filters.q:
        like = f"%{filters.q}%"
        query = query.where(
            or_(Car.vin.ilike(like), Car.make.ilike(like), Car.model.ilike(like), Car.license_plate.ilike(like))
        )
    order = []
    for field in filters.sort or ("created_at",):
        column = getattr(Car, field.lstrip("-"))
        order.append(column.desc() if field.startswith("-") else column.asc())
    return query.order_by(*order, Car.id)


def create_car(fields: dict[str, Any]) -> dict[str, Any]:
    try:
        data = insert_row(Car, fields)
    except IntegrityError as exc:
        raise _refusal(fields, None) from exc
    record_event("car.created", data["id"], data)
    _commit(fields)
    return data


def update_car(car_id: str, fields: dict[str, Any], *, replace: bool, if_match: str | None) -> dict[str, Any]:
    car = _load_for_change(car_id, if_match)
    if replace:  # PUT: what the body leaves out returns to its default
        for optional in ("license_plate", "color", "mileage_km", "price", "owner_id"):
            fields.setdefault(optional, None)
        fields.setdefault("status", "available")
    before = snapshot(car)
    for name, value in fields.items():
        setattr(car, name, value)
    changed = {name for name in fields if before[name] != getattr(car, name)}
    if not changed:
        db.session.rollback()
        return before
    _flush(fields, car_id)
    data = snapshot(car)
    record_event("car.updated", car.id, {**data, "changed": sorted(changed)})
    cache.invalidate_after_commit(car_key(car.id))
    _commit(fields, car_id)
    return data


def delete_car(car_id: str, if_match: str | None) -> None:
    car = _load_for_change(car_id, if_match)
    data = snapshot(car)
    db.session.delete(car)
    record_event("car.deleted", car_id, data)
    cache.invalidate_after_commit(car_key(car_id))
    _commit({}, car_id)


def _load_for_change(car_id: str, if_match: str | None) -> Car:
    car = db.session.get(Car, car_id)
    if car is None:
        raise NotFound(f"car {car_id} not found")
    if if_match is not None and if_match.strip() != "*" and etag(snapshot(car)) not in _etags(if_match):
        raise PreconditionFailed("the car has changed since you read it; read it again")
    return car


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _flush(fields: dict[str, Any], car_id: str | None = None) -> None:
    try:
        db.session.flush()
    except IntegrityError as exc:
        raise _refusal(fields, car_id) from exc


def _commit(fields: dict[str, Any], car_id: str | None = None) -> None:
    cache.bump_after_commit(LIST_NAMESPACE)
    try:
        db.session.commit()
    except IntegrityError as exc:
        raise _refusal(fields, car_id) from exc
    except StaleDataError as exc:
        db.session.rollback()
        raise PreconditionFailed("the car was changed concurrently; read it again") from exc


def _refusal(fields: dict[str, Any], car_id: str | None) -> DomainError:
    """The clear error once a constraint refused the write (unknown owner, VIN or plate
    taken). The constraints decide, so the write that succeeds, nearly every one, pays
    for no check; only a refused one looks for its reason."""
    db.session.rollback()
    owner_id = fields.get("owner_id")
    if owner_id and not users.exists(owner_id):
        return InvalidInput("owner does not exist", errors={"owner_id": ["Unknown user."]})
    name = taken_field(Car, fields, ("vin", "license_plate"), exclude_id=car_id)
    if name:
        return Conflict(f"a car with {name} {fields[name]} already exists", errors={name: ["Already exists."]})
    return Conflict("the car conflicts with a concurrent change; try again")
