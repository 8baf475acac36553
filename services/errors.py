"""Domain errors. Services raise them; the web layer maps them to HTTP once, and the
consumer sorts them into "dead-letter now" (``InvalidMessage``) or "retry later"."""

from __future__ import annotations


class DomainError(Exception):
    """A business rule said no. ``status`` is the HTTP status it maps to."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class InsufficientFunds(Conflict):
    title = "Insufficient funds"


class InsufficientStock(Conflict):
    title = "Insufficient stock"


class PreconditionFailed(DomainError):
    status = 412
    title = "Precondition failed"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class InvalidInput(DomainError):
    """Fields that pass the schema but break a rule that needs the database."""

    status = 422
    title = "Unprocessable entity"


class InvalidMessage(Exception):
    """An inbound message that can never be applied: dead-letter it at once."""
