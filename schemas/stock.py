"""Stock on the wire: strict HTTP bodies, tolerant (but validated) inbound messages.

HTTP input rejects unknown fields (the client can fix it). Messages from the broker
and the webhook ignore unknown fields (warehouse systems add attributes we do not
know), but what we read is still validated; a message that fails is dead-lettered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from models.stock import ACTIONS, COMMAND_ID_LENGTH, ID_LENGTH, MAIN_WAREHOUSE, MOVEMENT_EVENTS
from schemas.common import PageArgsSchema, StrictSchema

WAREHOUSE_MOVEMENT_TYPE = "ru.retail.warehouses.movement"


def is_visible_id(value: str, max_length: int = ID_LENGTH) -> bool:
    """1..max_length characters, none of them blank or a control character."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_length
        and value.isprintable()
        and not any(char.isspace() for char in value)
    )


class VisibleId(fields.String):
    """A sku, warehouse or command id: 1..N visible characters (UUIDs are fine)."""

    def __init__(self, max_length: int = ID_LENGTH, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not is_visible_id(text, self.max_length):
            raise ValidationError(f"1 to {self.max_length} visible characters, no spaces.")
        return text


class Quantity(fields.Integer):
    """A whole number of items, > 0; ``true`` and ``10.5`` are not quantities."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(min=1, max=1_000_000_000), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class FlexibleTime(fields.DateTime):
    """RFC 3339 text or epoch milliseconds (warehouse systems send either), as UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(value / 1000, tz=UTC)
            except (OverflowError, OSError, ValueError) as exc:
                raise ValidationError("Not a valid epoch time in milliseconds.") from exc
        parsed = super()._deserialize(value, attr, data, **kwargs)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# --- HTTP -------------------------------------------------------------------------------


class StockCommandSchema(StrictSchema):
    """The body of POST /stock/commands."""

    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    sku = VisibleId(required=True)
    qty = Quantity(required=True)
    warehouse_id = VisibleId(load_default=MAIN_WAREHOUSE)
    command_id = VisibleId(max_length=COMMAND_ID_LENGTH)


class CommandAcceptedSchema(Schema):
    status = fields.String(required=True)
    command_id = fields.String(required=True)


class StockCommandStatusSchema(Schema):
    command_id = fields.String(required=True)
    action = fields.String(required=True)
    sku = fields.String(required=True)
    qty = fields.Integer(required=True)
    warehouse_id = fields.String(required=True)
    status = fields.String(required=True)
    reason = fields.String(allow_none=True)
    created_at = fields.DateTime()
    applied_at = fields.DateTime(allow_none=True)


class StockItemArgsSchema(PageArgsSchema):
    warehouse_id = VisibleId()
    sku = VisibleId()


class StockLevelSchema(Schema):
    warehouse_id = fields.String(required=True)
    sku = fields.String(required=True)
    qty = fields.Integer(required=True)
    updated_at = fields.DateTime(allow_none=True)


class MovementSideSchema(Schema):
    warehouse_id = fields.String(required=True)
    at = fields.DateTime(required=True)
    quantity = fields.Integer(required=True)
    status = fields.String(required=True)


class MovementSchema(Schema):
    movement_id = fields.String(required=True)
    sku = fields.String(required=True)
    source = fields.Nested(MovementSideSchema, allow_none=True)
    destination = fields.Nested(MovementSideSchema, allow_none=True)
    status = fields.String(required=True)
    transit_seconds = fields.Float(allow_none=True)
    quantity_difference = fields.Integer(allow_none=True)


class WebhookAcceptedSchema(Schema):
    status = fields.String(required=True)
    id = fields.String(required=True)
    movement_id = fields.String(required=True)


# --- inbound messages (broker and webhook) ------------------------------------------------


class CommandMessageSchema(Schema):
    """A stock command: carhub's own event data, or a bare ``{"action","sku","qty"}``."""

    class Meta:
        unknown = EXCLUDE

    action = fields.String(validate=validate.OneOf(ACTIONS))  # else the routing key says
    sku = VisibleId(required=True)
    qty = Quantity(required=True)
    warehouse_id = VisibleId(load_default=MAIN_WAREHOUSE)
    command_id = VisibleId(max_length=COMMAND_ID_LENGTH)
    issued_by = fields.String(allow_none=True)


class MovementDataSchema(Schema):
    """The ``data`` of a warehouse movement CloudEvent (``product_id`` is the sku)."""

    class Meta:
        unknown = EXCLUDE

    movement_id = VisibleId(required=True)
    warehouse_id = VisibleId(required=True)
    timestamp = FlexibleTime()
    event = fields.String(required=True, validate=validate.OneOf(MOVEMENT_EVENTS))
    product_id = VisibleId(required=True)
    quantity = Quantity(required=True)


class WarehouseMovementEventSchema(Schema):
    """The body of the webhook: the CloudEvent a warehouse would publish to the broker."""

    class Meta:
        unknown = EXCLUDE  # CloudEvents extension attributes (destination, ...) are welcome

    id = VisibleId(required=True, max_length=64)  # it becomes the outbox row's id
    source = fields.String(required=True, validate=validate.Length(min=1, max=128))
    specversion = fields.String(load_default="1.0", validate=validate.Equal("1.0"))
    type = fields.String(required=True, validate=validate.Equal(WAREHOUSE_MOVEMENT_TYPE))
    time = FlexibleTime()
    subject = fields.String(allow_none=True, validate=validate.Length(max=128))
    data = fields.Nested(MovementDataSchema, required=True)
