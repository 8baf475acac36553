"""Register, sign in, and who am I."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_jwt_extended import create_access_token

from blueprints.common import Blueprint, auth_required, current_user_id
from extensions import limiter
from schemas.users import LoginSchema, RegisterSchema, TokenSchema, UserSchema
from services import users

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and tokens")


@blp.route("/register")
class Register(MethodView):
    decorators = [limiter.limit("AUTH_RATE_LIMIT")]

    @blp.arguments(RegisterSchema)
    @blp.response(201, UserSchema)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a customer account."""
        return users.create_user(**body)


@blp.route("/login")
class Login(MethodView):
    decorators = [limiter.limit("AUTH_RATE_LIMIT")]

    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Exchange email and password for a bearer token."""
        user = users.authenticate(body["email"], body["password"])
        expires = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
        token = create_access_token(identity=user.id, additional_claims={"role": user.role})
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(expires.total_seconds())}


@blp.route("/me")
class Me(MethodView):
    @auth_required()
    @blp.response(200, UserSchema)
    def get(self) -> Any:
        """The signed-in user."""
        return users.get_user(current_user_id())
