"""Orders on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields, validate, validates

from models.orders import ORDER_STATUSES
from schemas.common import Money, PageArgsSchema, StrictSchema, UUIDString


class OrderedServiceSchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    qty = fields.Integer(load_default=1, strict=True, validate=validate.Range(min=1, max=1000))


class OrderCreateSchema(StrictSchema):
    car_id = UUIDString(required=True)
    desired_time = fields.AwareDateTime(required=True, default_timezone=UTC)
    description = fields.String(load_default="", validate=validate.Length(max=4000))
    services = fields.List(fields.Nested(OrderedServiceSchema), required=True, validate=validate.Length(min=1, max=100))

    @validates("desired_time")
    def validate_desired_time(self, value: datetime, **_: Any) -> None:
        if value < datetime.now(UTC):
            raise ValidationError("Must be in the future.")


class OrderLineSchema(StrictSchema):
    code = fields.String()
    name = fields.String()
    kind = fields.String()
    unit_price = Money()
    qty = fields.Integer()
    amount = Money()


class ReviewSchema(StrictSchema):
    rating = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    comment = fields.String(allow_none=True, validate=validate.Length(max=4000))
    created_at = fields.DateTime(dump_only=True)


class OrderSchema(StrictSchema):
    id = fields.String()
    user_id = fields.String()
    car_id = fields.String(allow_none=True)
    status = fields.String()
    desired_time = fields.DateTime()
    description = fields.String()
    total = Money()
    bonus_spent = Money()
    amount_due = Money(metadata={"description": "What a payment would charge now: total less bonus spent; 0 if paid."})
    paid = fields.Boolean()
    paid_at = fields.DateTime(allow_none=True)
    version = fields.Integer(metadata={"description": "Changes with every change of the order; the ETag."})
    lines = fields.List(fields.Nested(OrderLineSchema))
    review = fields.Nested(ReviewSchema, allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class OrderStatusSchema(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf(ORDER_STATUSES))


class OrderListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(ORDER_STATUSES))
    car_id = UUIDString()
    user_id = UUIDString(metadata={"description": "Staff only; customers always see their own."})
