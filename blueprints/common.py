"""What every blueprint shares: who is calling, role checks, ETags."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, request
from flask_jwt_extended import get_jwt, get_jwt_identity, verify_jwt_in_request

from services.errors import Forbidden

F = TypeVar("F", bound=Callable[..., Any])

# A role includes the ones below it.
ROLE_RANK = {"customer": 0, "staff": 1, "admin": 2}


def auth_required(role: str = "customer") -> Callable[[F], F]:
    """Require a valid bearer token whose role is at least ``role``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            verify_jwt_in_request()
            if ROLE_RANK.get(current_role(), -1) < ROLE_RANK[role]:
                raise Forbidden(f"this needs the {role} role")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def current_user_id() -> str:
    return str(get_jwt_identity())


def current_role() -> str:
    return str(get_jwt().get("role", "customer"))


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
