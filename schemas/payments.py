"""Payments on the wire: the client names the order and the method, never the amount."""

from __future__ import annotations

from marshmallow import fields, validate

from models.payments import PAYMENT_METHODS
from schemas.common import Money, PageArgsSchema, StrictSchema, UUIDString


class PaymentCreateSchema(StrictSchema):
    order_id = UUIDString(required=True)
    method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))


class PaymentSchema(StrictSchema):
    id = fields.String()
    order_id = fields.String()
    user_id = fields.String()
    amount = Money()
    method = fields.String()
    status = fields.String()
    created_at = fields.DateTime()
    refunded_at = fields.DateTime(allow_none=True)


class PaymentListArgsSchema(PageArgsSchema):
    order_id = UUIDString()


class IdempotencyHeaderSchema(StrictSchema):
    """Documents the header; the view reads it itself (headers carry many other keys)."""

    class Meta:
        unknown = "exclude"

    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=validate.Length(min=1, max=255),
        metadata={"description": "Retry with the same key: the first result comes back, nothing changes."},
    )
