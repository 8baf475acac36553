"""Cars on the wire: the rules a client can break without asking the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields, pre_load, validate, validates

from models.cars import CAR_STATUSES
from schemas.common import Money, PageArgsSchema, StrictSchema, UUIDString
from services.cars import SORTABLE

VIN_PATTERN = r"^[A-HJ-NPR-Z0-9]{17}$"  # ISO 3779: no I, O or Q


class CarSchema(StrictSchema):
    """A car; the body of POST and PUT (PATCH takes any subset)."""

    id = fields.String(dump_only=True)
    vin = fields.String(
        required=True, validate=validate.Regexp(VIN_PATTERN, error="17 characters of A-H, J-N, P, R-Z and 0-9.")
    )
    make = fields.String(required=True, validate=validate.Length(min=1, max=64))
    model = fields.String(required=True, validate=validate.Length(min=1, max=64))
    year = fields.Integer(required=True, strict=True)
    license_plate = fields.String(allow_none=True, validate=validate.Length(min=1, max=16))
    color = fields.String(allow_none=True, validate=validate.Length(max=32))
    mileage_km = fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0, max=10_000_000))
    price = Money(allow_none=True, validate=validate.Range(min=0, max=9_999_999_999))
    status = fields.String(validate=validate.OneOf(CAR_STATUSES))
    owner_id = UUIDString(allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)

    @pre_load
    def normalise(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name in ("vin", "license_plate"):
                if isinstance(data.get(name), str):
                    data[name] = data[name].strip().upper()
        return data

    @validates("year")
    def validate_year(self, year: int, **_: Any) -> None:
        last = datetime.now(UTC).year + 1
        if not 1886 <= year <= last:
            raise ValidationError(f"Must be between 1886 and {last}.")


class CarListArgsSchema(PageArgsSchema):
    make = fields.String()
    model = fields.String()
    status = fields.String(validate=validate.OneOf(CAR_STATUSES))
    year_from = fields.Integer()
    year_to = fields.Integer()
    owner_id = UUIDString()
    q = fields.String(validate=validate.Length(min=1, max=64))
    sort = fields.String(load_default="created_at")

    @validates("sort")
    def validate_sort(self, value: str, **_: Any) -> None:
        for part in value.split(","):
            if part.strip().lstrip("-") not in SORTABLE:
                raise ValidationError(f"Sort by {', '.join(SORTABLE)}, with '-' for descending.")
