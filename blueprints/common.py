"""What every blueprint shares: who is calling, role checks, ETags."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import flask_smorest
from flask import Response, current_app, g, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from marshmallow import Schema

from services.errors import Forbidden

F = TypeVar("F", bound=Callable[..., Any])

# A role includes the ones below it.
ROLE_RANK = {"customer": 0, "staff": 1, "admin": 2}


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, with one schema instance per route for the arguments.

    Given a schema class, webargs builds an instance on every request, and building one
    deep-copies its fields: a tenth of a POST /cars. Loading keeps no state in the schema.
    """

    def arguments(self, schema: type[Schema] | Schema, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)


# Tokens this process has verified, until they expire: verifying a signature costs more
# than the rest of a cached read (bench/api.py). A token is immutable and carhub keeps no
# revocation list, so a verified token stays valid until its ``exp`` whoever checks it.
VERIFIED_TOKENS_MAX = 10_000


def auth_required(role: str = "customer") -> Callable[[F], F]:
    """Require a valid bearer token whose role is at least ``role``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.jwt_claims = _verified_claims()
            if ROLE_RANK.get(current_role(), -1) < ROLE_RANK[role]:
                raise Forbidden(f"this needs the {role} role")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _verified_claims() -> dict[str, Any]:
    """The claims of the request's bearer token; flask-jwt-extended verifies unknown ones."""
    verified: dict[str, dict[str, Any]] = current_app.extensions.setdefault("carhub_verified_tokens", {})
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    claims = verified.get(token)
    if claims is not None and claims.get("exp", 0) > time.time():
        return claims
    verify_jwt_in_request()  # raises (401) on a missing, malformed, forged or expired token
    claims = get_jwt()
    if len(verified) >= VERIFIED_TOKENS_MAX:
        verified.clear()  # rare, and cheaper than tracking which entry is oldest
    verified[token] = claims
    return claims


def current_user_id() -> str:
    return str(g.jwt_claims["sub"])


def current_role() -> str:
    return str(g.jwt_claims.get("role", "customer"))


def is_staff() -> bool:
    return ROLE_RANK.get(current_role(), -1) >= ROLE_RANK["staff"]


def visible_owner() -> str | None:
    """The owner a list is limited to: the caller if a customer, nobody if staff."""
    return None if is_staff() else current_user_id()


def with_etag(response: Response, tag: str) -> Response:
    response.headers["ETag"] = tag
    return response


def if_match() -> str | None:
    return request.headers.get("If-Match")
