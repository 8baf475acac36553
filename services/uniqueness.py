"""Which unique field a write collides on: the clear message a UNIQUE constraint lacks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select

from extensions import db


def taken_field(
    model: Any, fields: Mapping[str, Any], names: Iterable[str], exclude_id: str | None = None
) -> str | None:
    """The first of ``names`` whose value in ``fields`` another row of ``model`` already has."""
    for name in names:
        value = fields.get(name)
        if value is None:
            continue
        query = select(model.id).where(getattr(model, name) == value)
        if exclude_id:
            query = query.where(model.id != exclude_id)
        if db.session.scalar(query) is not None:
            return name
    return None
