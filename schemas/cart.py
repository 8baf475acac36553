"""The cart on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields, pre_load, validate, validates

from models.cart import MAX_LINE_QTY
from schemas.common import Money, StrictSchema, UUIDString, no_control_characters


class CartItemSchema(StrictSchema):
    """One line: the catalogue's current price, and that price times qty."""

    id = fields.String(dump_only=True)
    code = fields.String(required=True, validate=[validate.Length(min=1, max=64), no_control_characters])
    name = fields.String(dump_only=True, allow_none=True)
    qty = fields.Integer(strict=True, load_default=1, validate=validate.Range(min=1, max=MAX_LINE_QTY))
    version = fields.Integer(dump_only=True, metadata={"description": 'The line\'s ETag is "<id>.<version>".'})
    price = Money(dump_only=True, allow_none=True)
    amount = Money(dump_only=True, allow_none=True)
    available = fields.Boolean(dump_only=True)
    added_at = fields.DateTime(dump_only=True)

    @pre_load
    def normalise(self, data: Any, **_: Any) -> Any:
        """Codes as the catalogue stores them: trimmed, lower-case."""
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            data = {**data, "code": data["code"].strip().lower()}
        return data


class CartQuantitySchema(StrictSchema):
    qty = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_LINE_QTY))


class CartSchema(StrictSchema):
    items = fields.List(fields.Nested(CartItemSchema), required=True)
    total = Money(required=True)


class CheckoutSchema(StrictSchema):
    """The order's details the cart does not hold: which car, and when."""

    car_id = UUIDString(required=True)
    desired_time = fields.AwareDateTime(required=True, default_timezone=UTC)
    description = fields.String(load_default="", validate=[validate.Length(max=4000)])

    @validates("desired_time")
    def validate_desired_time(self, value: datetime, **_: Any) -> None:
        """The same rule as POST /orders: a service slot in the past cannot be booked."""
        if value < datetime.now(UTC):
            raise ValidationError("Must be in the future.")
