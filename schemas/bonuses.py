"""The bonus account on the wire."""

from __future__ import annotations

from decimal import Decimal

from marshmallow import fields, validate

from schemas.common import Money, PageArgsSchema, StrictSchema, UUIDString


class BonusEntrySchema(StrictSchema):
    id = fields.String()
    kind = fields.String(metadata={"description": "accrual, promo, spend or reversal"})
    amount = Money(metadata={"description": "Signed: accruals and promos add, spends and reversals subtract."})
    reference = fields.String(allow_none=True)
    payment_id = fields.String(allow_none=True)
    order_id = fields.String(allow_none=True)
    unreversed = Money(metadata={"description": "For a reversal: what the balance could no longer give back."})
    created_at = fields.DateTime()


class BonusAccountSchema(StrictSchema):
    user_id = fields.String()
    balance = Money()
    entries = fields.List(fields.Nested(BonusEntrySchema))
    page = fields.Integer()
    size = fields.Integer()
    total = fields.Integer()


class BonusChangeSchema(StrictSchema):
    """The new balance and the ledger entry that made it."""

    balance = Money()
    entry = fields.Nested(BonusEntrySchema)


class BonusAccountArgsSchema(PageArgsSchema):
    size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))


class PromoApplySchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))


class SpendSchema(StrictSchema):
    amount = Money(required=True, validate=validate.Range(min=Decimal("0.01"), max=Decimal("9999999999.99")))
    order_id = UUIDString(allow_none=True)
