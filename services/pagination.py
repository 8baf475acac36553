"""One page of a query, in a stable order, counted once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select

from extensions import db

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    size: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "page": self.page, "size": self.size, "total": self.total}


def paginate(query: Select, page: int, size: int) -> Page:
    """``query`` must already be ordered with a unique tie-break (usually the id)."""
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = list(db.session.scalars(query.limit(size).offset((page - 1) * size)))
    return Page(items=items, page=page, size=size, total=total)
