"""What operators see at /health and /stats, gathered from the database and the cache."""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask import current_app
from sqlalchemy import func, select, text

from extensions import cache, db
from models.base import utcnow
from models.messaging import DeadLetter, InboxMessage, LocalDelivery, OutboxMessage
from observability import sample_totals


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
    """Events published by the relay and messages applied by consumers come from the
    tables (true across processes and restarts); retries from the worker's counters."""
    published = db.session.scalar(select(func.count()).where(OutboxMessage.published_at.is_not(None))) or 0
    pending = db.session.scalar(select(func.count()).where(OutboxMessage.published_at.is_(None))) or 0
    consumed = db.session.scalar(select(func.count()).select_from(InboxMessage)) or 0
    dead = db.session.scalar(select(func.count()).select_from(DeadLetter)) or 0
    counters = sample_totals("carhub_messages_total", "outcome")
    db.session.rollback()
    return {
        "published": published,
        "unpublished": pending,
        "consumed": consumed,
        "retried": int(counters.get(("retried",), 0)),
        "duplicates": int(counters.get(("duplicate",), 0)),
        "dead_lettered": dead,
    }


def outbox_backlog() -> dict[str, Any]:
    """What waits in the outbox: how many rows, how old the oldest, how many failing."""
    unsent = OutboxMessage.published_at.is_(None)
    backlog = db.session.scalar(select(func.count()).where(unsent)) or 0
    oldest = db.session.scalar(select(func.min(OutboxMessage.created_at)).where(unsent))
    failing = db.session.scalar(select(func.count()).where(unsent, OutboxMessage.attempts > 0)) or 0
    db.session.rollback()
    return {
        "outbox_backlog": backlog,
        "outbox_oldest_unsent_seconds": round((utcnow() - oldest).total_seconds(), 3) if oldest else 0.0,
        "outbox_failing": failing,
    }


def embedded_queue_depths() -> dict[str, dict[str, int]]:
    """Embedded mode: messages waiting per queue (the local_deliveries table)."""
    rows = db.session.execute(select(LocalDelivery.queue, func.count()).group_by(LocalDelivery.queue)).all()
    db.session.rollback()
    return {queue: {"messages": count} for queue, count in rows}
