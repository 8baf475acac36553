"""Embedded mode (no RABBITMQ_URL): the outbox table is the queue.

The embedded relay does what the topic exchange does: each unsent outbox row becomes
one ``local_deliveries`` row per queue its routing key reaches (``topology.queues_for``),
in one transaction with marking the row sent. The embedded consumer applies ready
deliveries with the same :class:`Processor` (inbox, savepoints, failure sorting) and,
in the SAME transaction, deletes them, reschedules them with the same growing delays
as the delay queues, or moves them to ``dead_letters``. So the behaviour with and
without a broker is the same, only the transport differs.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import Select, bindparam, delete, or_, select
from sqlalchemy.orm import Session

from extensions import db
from messaging import metrics
from messaging.envelope import body_text, outgoing
from messaging.processing import Delivery, Handle, Outcome, Processor, settle
from messaging.topology import EVENTS_EXCHANGE, ROUTING_KEY_HEADER, must_be_routed, queues_for, retry_delay_seconds
from messaging.wakeup import OutboxDoorbell
from models.base import utcnow
from models.messaging import DeadLetter, LocalDelivery, OutboxMessage

log = logging.getLogger("carhub.embedded")


def unsent_query(*columns: object) -> Select:
    """Unsent rows due at the ``now`` parameter, oldest first (lock them:
    ``with_for_update(skip_locked=True)``). Built once, run with ``{"now": utcnow()}``."""
    return (
        select(*columns)
        .where(
            OutboxMessage.published_at.is_(None),
            or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= bindparam("now")),
        )
        .order_by(OutboxMessage.created_at, OutboxMessage.id)
    )


def unsent_rows(limit: int, session: Session | None = None) -> list[OutboxMessage]:
    """Unsent rows due now, oldest first, locked (SKIP LOCKED on PostgreSQL, so several
    relays share the work and never take the same row)."""
    session = session or db.session
    query = unsent_query(OutboxMessage).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query, {"now": utcnow()}))


def postpone(row: OutboxMessage, error: str) -> None:
    """Keep a row unsent, retried later with a growing pause (capped at a minute)."""
    row.attempts = (row.attempts or 0) + 1
    row.last_error = error[:1000]
    row.next_attempt_at = postponed_until(row.attempts)


def postponed_until(attempts: int) -> datetime:
    return utcnow() + timedelta(seconds=min(60, 2 ** min(attempts, 6)))


def dead_letter_row(delivery: Delivery, reason: str, dead_letter_id: str | None = None) -> DeadLetter:
    return DeadLetter(
        **({"id": dead_letter_id} if dead_letter_id else {}),
        message_id=delivery.message_id,
        queue=delivery.queue,
        routing_key=delivery.routing_key,
        reason=reason[:2000],
        attempts=delivery.attempt + (1 if reason.startswith("gave up") else 0),
        content_type=delivery.content_type,
        correlation_id=delivery.correlation_id,
        body=delivery.body.decode("utf-8", errors="replace"),
        headers={k: v for k, v in delivery.headers.items() if isinstance(v, str | int | float | bool)} or None,
    )


class EmbeddedWorker:
    """Relay and consumer over the database; ``run`` loops until ``stop`` is set."""

    def __init__(
        self,
        app: Flask,
        handle: Handle,
        permanent: tuple[type[BaseException], ...],
        batch_size: int = 100,
        stop: threading.Event | None = None,
    ) -> None:
        self.app = app
        self.processor = Processor(handle, permanent)
        self.batch_size = batch_size
        self.stop = stop or threading.Event()

    # --- relay -----------------------------------------------------------------------

    def relay_pending(self) -> int:
        """Fan unsent outbox rows out to their queues; returns how many rows were taken."""
        with self.app.app_context():
            rows = unsent_rows(self.batch_size)
            if not rows:
                db.session.rollback()
                return 0
            now, sent = utcnow(), 0
            for row in rows:
                queues = [row.destination] if row.destination else queues_for(row.type)
                if not queues and must_be_routed(row.type):
                    postpone(row, f"unroutable: no queue is bound to {row.type!r}")
                    continue
                properties = outgoing(row, EVENTS_EXCHANGE).properties
                routing_key = (row.headers or {}).get(ROUTING_KEY_HEADER) or row.type
                body = body_text(row)
                for queue in queues:
                    db.session.add(
                        LocalDelivery(
                            queue=queue,
                            routing_key=routing_key,
                            message_id=properties.message_id,
                            content_type=properties.content_type,
                            correlation_id=row.correlation_id,
                            body=body,
                            available_at=now,
                        )
                    )
                row.published_at = now
                sent += 1
            db.session.commit()
            metrics.count("published", sent)
            return len(rows)

    # --- consumer --------------------------------------------------------------------

    def consume_pending(self) -> int:
        """Apply the deliveries that are due; returns how many were taken."""
        with self.app.app_context():
            query = (
                select(LocalDelivery)
                .where(LocalDelivery.available_at <= utcnow())
                .order_by(LocalDelivery.id)
                .limit(self.batch_size)
            )
            if db.session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(db.session.scalars(query))
            deliveries = [
                Delivery(
                    queue=row.queue,
                    routing_key=row.routing_key,
                    body=row.body.encode(),
                    message_id=row.message_id,
                    correlation_id=row.correlation_id,
                    content_type=row.content_type,
                    attempt=row.attempts,
                    tag=row.id,
                )
                for row in rows
            ]
            if not deliveries:
                db.session.rollback()
                return 0
            try:
                self.processor.run(deliveries, self._bookkeeping)
            except Exception:
                log.exception("could not record the outcome of %d deliveries; retrying", len(deliveries))
                db.session.rollback()
                self.stop.wait(0.5)
            return len(deliveries)

    @staticmethod
    def _bookkeeping(outcomes: list[tuple[Delivery, Outcome]]) -> None:
        final = [(delivery, settle(delivery, outcome)) for delivery, outcome in outcomes]
        for delivery, outcome in final:
            if outcome.kind == "retry":
                attempt = delivery.attempt + 1
                row = db.session.get(LocalDelivery, delivery.tag)
                if row is not None:
                    row.attempts = attempt
                    row.last_error = outcome.reason
                    row.available_at = utcnow() + timedelta(seconds=retry_delay_seconds(attempt))
                continue
            if outcome.kind == "dead":
                db.session.add(dead_letter_row(delivery, outcome.reason))
            db.session.execute(delete(LocalDelivery).where(LocalDelivery.id == delivery.tag))
        metrics.count_outcomes(final)

    # --- loops -----------------------------------------------------------------------

    def run_until_idle(self, max_rounds: int = 1000) -> None:
        """Relay and consume until nothing is due (tests, ``flask`` commands)."""
        for _ in range(max_rounds):
            if self.relay_pending() + self.consume_pending() == 0:
                return
        raise RuntimeError("the embedded queues did not drain")

    def run(self) -> None:
        doorbell = OutboxDoorbell(self.app.config["SQLALCHEMY_DATABASE_URI"])
        log.info("embedded worker started (outbox table as the queue)")
        try:
            while not self.stop.is_set():
                try:
                    busy = self.relay_pending() + self.consume_pending()
                except Exception:
                    log.exception("embedded worker step failed; retrying shortly")
                    self.stop.wait(1.0)
                    continue
                if not busy:
                    # Retries come due without a commit: never sleep long.
                    doorbell.wait(0.2)
        finally:
            doorbell.close()
        log.info("embedded worker stopped")
