"""Dead letters on the wire."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from schemas.common import PageArgsSchema


class DeadLetterArgsSchema(PageArgsSchema):
    queue = fields.String(validate=validate.Length(min=1, max=128))


class DeadLetterSchema(Schema):
    id = fields.String()
    message_id = fields.String(allow_none=True)
    queue = fields.String(allow_none=True, metadata={"description": "the queue whose consumer gave up"})
    routing_key = fields.String(metadata={"description": "the original routing key (what replay republishes)"})
    reason = fields.String(metadata={"description": "x-carhub-error: why it was dead-lettered"})
    attempts = fields.Integer()
    content_type = fields.String(allow_none=True)
    correlation_id = fields.String(allow_none=True)
    body = fields.String(metadata={"description": "the message body as received"})
    headers = fields.Dict()
    created_at = fields.DateTime()
    replayed_at = fields.DateTime(allow_none=True)
