"""Notifications on the wire."""

from __future__ import annotations

from marshmallow import fields

from schemas.common import PageArgsSchema, StrictSchema


class NotificationSchema(StrictSchema):
    id = fields.String()
    kind = fields.String()
    title = fields.String()
    body = fields.String()
    reference = fields.String(allow_none=True)
    created_at = fields.DateTime()
    read_at = fields.DateTime(allow_none=True)
    read = fields.Function(lambda notification: notification.read_at is not None)


class NotificationArgsSchema(PageArgsSchema):
    unread = fields.Boolean(load_default=False)
