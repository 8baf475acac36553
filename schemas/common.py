"""Schemas every area shares: paging arguments, the page envelope, money."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate


def schema_name(schema: type[Schema] | Schema) -> str:
    """OpenAPI component names: ``CarSchema`` → ``Car``, ``CarSchema(partial=True)`` → ``CarPatch``."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    if not isinstance(schema, type) and schema.partial:
        name += "Patch"
    return name


class StrictSchema(Schema):
    """HTTP input is strict: unknown fields are an error (marshmallow's default, kept),
    and no text holds a NUL character, which PostgreSQL cannot store or search for
    (SQLite could: refusing it everywhere keeps both databases alike)."""

    @pre_load
    def _refuse_nul_characters(self, data: Any, **_: Any) -> Any:
        found = _places_with_nul(data)
        if found:
            raise ValidationError({place: ["NUL characters are not allowed."] for place in found})
        return data


def no_control_characters(value: str) -> None:
    """For codes and plates: printable text only."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValidationError("Control characters are not allowed.")


def _places_with_nul(data: Any, place: str = "") -> list[str]:
    """Dotted names of the values (and keys) of ``data`` that hold a NUL character."""
    if isinstance(data, str):
        return [place or "_schema"] if "\x00" in data else []
    found: list[str] = []
    if isinstance(data, Mapping):
        for key in data:
            name = f"{place}.{key}" if place else str(key)
            if "\x00" in str(key):
                found.append(name.replace("\x00", "\\0"))
            # a query string's MultiDict: every value of a repeated parameter
            values = data.getlist(key) if hasattr(data, "getlist") else [data[key]]
            for value in values:
                found += _places_with_nul(value, name)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found += _places_with_nul(item, f"{place}.{index}" if place else str(index))
    return found


class PageArgsSchema(StrictSchema):
    # Bounded: page=10**20 overflowed the OFFSET. No list here has ten million pages.
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10_000_000))
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
