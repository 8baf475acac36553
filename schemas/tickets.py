"""Tickets and their messages on the wire."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from models.tickets import TICKET_STATUSES
from schemas.common import PageArgsSchema, StrictSchema, UUIDString


class TicketSchema(Schema):
    """A ticket as the API shows it."""

    id = fields.String(dump_only=True)
    user_id = fields.String(dump_only=True)
    user_name = fields.String(dump_only=True)
    subject = fields.String(dump_only=True)
    description = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    car_id = fields.String(dump_only=True, allow_none=True)
    assignee_id = fields.String(dump_only=True, allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class TicketCreateSchema(StrictSchema):
    """The body of POST /tickets."""

    subject = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(required=True, validate=validate.Length(min=1, max=10_000))
    car_id = UUIDString(allow_none=True)


class TicketPatchSchema(StrictSchema):
    """The body of PATCH /tickets/{id} (staff): a new status, an assignee (null unassigns), or both."""

    status = fields.String(validate=validate.OneOf(TICKET_STATUSES))
    assignee_id = UUIDString(allow_none=True)

    @validates_schema
    def something_to_change(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("Give a status, an assignee_id or both.", "_schema")


class TicketListArgsSchema(PageArgsSchema):
    user_name = fields.String(validate=validate.Length(min=1, max=200))
    status = fields.String(validate=validate.OneOf(TICKET_STATUSES))


class TicketMessageSchema(Schema):
    """A message on a ticket."""

    id = fields.String(dump_only=True)
    ticket_id = fields.String(dump_only=True)
    author_id = fields.String(dump_only=True, allow_none=True)
    author_name = fields.String(dump_only=True)
    author_is_staff = fields.Boolean(dump_only=True)
    body = fields.String(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


class TicketMessageCreateSchema(StrictSchema):
    body = fields.String(required=True, validate=validate.Length(min=1, max=10_000))
