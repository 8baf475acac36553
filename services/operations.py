"""What operators see at /health and /stats, gathered from the database and the cache."""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask import current_app
from sqlalchemy import func, select, text

from extensions import cache, db
from models.base import utcnow
from models.messaging import InboxMessage, OutboxMessage


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = {"status": "ok", **(check() or {})}
    except Exception as exc:  # noqa: BLE001 - a health check reports, it never raises
        db.session.rollback()
        result = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def check_database() -> dict[str, Any]:
    def check() -> dict[str, Any]:
        db.session.execute(text("SELECT 1"))
        oldest = db.session.scalar(
            select(func.min(OutboxMessage.created_at)).where(OutboxMessage.published_at.is_(None))
        )
        backlog = db.session.scalar(select(func.count()).where(OutboxMessage.published_at.is_(None)))
        db.session.rollback()
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        return {
            "backend": db.engine.dialect.name,
            "outbox_backlog": backlog,
            "outbox_oldest_unsent_seconds": round(age, 3),
        }

    return _timed(check)


def check_cache() -> dict[str, Any]:
    def check() -> dict[str, Any]:
        key, token = "health:probe", uuid.uuid4().hex
        if not cache.set(key, token, timeout=10) or cache.get(key) != token:
            raise RuntimeError("the cache did not return what was written")
        return {"backend": current_app.config["CACHE_TYPE"]}

    return _timed(check)


def check_with(check: Any) -> dict[str, Any]:
    return _timed(check)


def message_counts() -> dict[str, int]:
    """Events published by the relay and messages applied by consumers, from the tables."""
    published = db.session.scalar(select(func.count()).where(OutboxMessage.published_at.is_not(None))) or 0
    pending = db.session.scalar(select(func.count()).where(OutboxMessage.published_at.is_(None))) or 0
    consumed = db.session.scalar(select(func.count()).select_from(InboxMessage)) or 0
    return {"published": published, "unpublished": pending, "consumed": consumed}
