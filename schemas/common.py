"""Schemas every area shares: paging arguments, the page envelope, money."""

from __future__ import annotations

from functools import cache

from marshmallow import Schema, fields, validate


def schema_name(schema: type[Schema] | Schema) -> str:
    """OpenAPI component names: ``CarSchema`` → ``Car``, ``CarSchema(partial=True)`` → ``CarPatch``."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    if not isinstance(schema, type) and schema.partial:
        name += "Patch"
    return name


class StrictSchema(Schema):
    """HTTP input is strict: unknown fields are an error (marshmallow's default, kept)."""


class PageArgsSchema(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100))


@cache
def page_of(item_schema: type[Schema]) -> type[Schema]:
    """``{items, page, size, total}`` of ``item_schema`` (one class per item schema)."""
    name = item_schema.__name__.removesuffix("Schema") + "PageSchema"
    return type(
        name,
        (Schema,),
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "page": fields.Integer(required=True),
            "size": fields.Integer(required=True),
            "total": fields.Integer(required=True),
        },
    )


def Money(**kwargs: object) -> fields.Decimal:  # noqa: N802 - reads like a field class
    """A decimal string with two places on the wire (``"4500.00"``)."""
    return fields.Decimal(places=2, as_string=True, **kwargs)


class ProblemSchema(Schema):
    """RFC 9457 problem details, the body of every error."""

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    request_id = fields.String()


class UUIDString(fields.UUID):
    """A UUID checked on the way in and kept as its canonical string."""

    def _deserialize(self, value: object, attr: str | None, data: object, **kwargs: object) -> str:  # type: ignore[override]
        return str(super()._deserialize(value, attr, data, **kwargs))
