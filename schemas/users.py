"""Users on the wire."""

from __future__ import annotations

from marshmallow import fields, validate

from schemas.common import StrictSchema


class RegisterSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=8, max=256))
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    phone = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(r"^\+?[0-9 ()-]{5,32}$"))


class LoginSchema(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=256))


class TokenSchema(StrictSchema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)


class UserSchema(StrictSchema):
    id = fields.String(dump_only=True)
    email = fields.Email()
    full_name = fields.String()
    phone = fields.String(allow_none=True)
    role = fields.String()
    created_at = fields.DateTime(dump_only=True)
