"""The catalogue on the wire."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, pre_load, validate

from models.catalogue import ITEM_KINDS
from schemas.common import Money, PageArgsSchema, StrictSchema

CODE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class CatalogueItemSchema(StrictSchema):
    """A priced service or part; the body of POST (PATCH takes any subset)."""

    id = fields.String(dump_only=True)
    code = fields.String(
        required=True,
        validate=validate.Regexp(CODE_PATTERN, error="1..64 of a-z, 0-9, '_', '.', '-'; a letter or digit first."),
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(load_default="service", validate=validate.OneOf(ITEM_KINDS))
    sku = fields.String(allow_none=True, validate=validate.Length(min=1, max=64))
    description = fields.String(validate=validate.Length(max=2000))
    price = Money(required=True, validate=validate.Range(min=0, max=9_999_999_999))
    active = fields.Boolean()
    version = fields.Integer(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)

    @pre_load
    def normalise(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            data = {**data, "code": data["code"].strip().lower()}
        return data


class CatalogueItemPatchSchema(CatalogueItemSchema):
    """PATCH: any subset, and no defaults filled in."""

    kind = fields.String(validate=validate.OneOf(ITEM_KINDS))


class CatalogueArgsSchema(PageArgsSchema):
    size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=100))
    kind = fields.String(validate=validate.OneOf(ITEM_KINDS))
    q = fields.String(validate=validate.Length(min=1, max=64))
