"""Apply deliveries: decode, inbox row + handler in one transaction, sort the failures.

The same unit of work serves the RabbitMQ consumer and the embedded (outbox-table)
consumer. The deliveries that arrived together share one transaction, so a batch costs
one commit, one multi-row INSERT of its inbox rows and one per table its handlers write
through the ORM, instead of one of each per message (the commit is what is slow).
Anything going wrong in a batch (a poison message, a duplicate, the database) rolls the
whole batch back, and its messages are applied again one at a time, each in its own
transaction, where the failure is sorted: a duplicate changes nothing, a permanent
error is dead-lettered, a transient one retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from extensions import db
from messaging.envelope import Message, decode
from models.messaging import InboxMessage
from tracing import request_id_var

log = logging.getLogger("carhub.consumer")

Handle = Callable[[str, Message], None]


@dataclass
class Delivery:
    """One message on one queue, wherever it came from."""

    queue: str
    routing_key: str  # the original routing key: what the handler table is keyed by
    body: bytes
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    attempt: int = 0  # transient failures so far
    headers: dict[str, Any] = field(default_factory=dict)
    tag: Any = None  # the transport's handle (delivery tag, row id)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "done" | "duplicate" | "retry" | "dead" (| "requeue": the dead-letter copy, not stored)
    reason: str = ""


DONE = Outcome("done")
DUPLICATE = Outcome("duplicate")
Bookkeeping = Callable[[list[tuple[Delivery, Outcome]]], None]


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


class _Transient(Exception):
    def __init__(self, delivery: Delivery, error: BaseException) -> None:
        super().__init__(describe(error))
        self.delivery, self.error = delivery, error


class Processor:
    """Runs ``handle(queue, message)`` for deliveries, exactly once per (queue, message id).

    ``permanent`` are the exception types that can never succeed (dead-letter now);
    every other exception is transient (retry later). Call inside an app context.
    """

    def __init__(self, handle: Handle, permanent: tuple[type[BaseException], ...]) -> None:
        self.handle = handle
        self.permanent = (*permanent, ValueError, TypeError)

    def run(
        self, deliveries: Sequence[Delivery], bookkeeping: Bookkeeping | None = None
    ) -> list[tuple[Delivery, Outcome]]:
        """Apply ``deliveries`` and commit. ``bookkeeping`` runs in the same transaction
        just before the commit (the embedded transport deletes or reschedules its rows)."""
        if deliveries:
            try:
                outcomes = self._apply_batch(deliveries)
                if bookkeeping:
                    bookkeeping(outcomes)
                db.session.commit()
            except Exception as exc:  # noqa: BLE001 - sorted below, one message at a time
                db.session.rollback()
                log.info("batch of %d broken (%s); applying one by one", len(deliveries), describe(exc))
            else:
                return outcomes
        results: list[tuple[Delivery, Outcome]] = []
        for delivery in deliveries:
            results.extend(self._run_one(delivery, bookkeeping))
        return results

    def _run_one(self, delivery: Delivery, bookkeeping: Bookkeeping | None) -> list[tuple[Delivery, Outcome]]:
        try:
            outcomes = self._apply([delivery])
            if bookkeeping:
                bookkeeping(outcomes)
            db.session.commit()
            return outcomes
        except Exception as exc:  # noqa: BLE001 - transient: the transport retries it
            db.session.rollback()
            error = exc.error if isinstance(exc, _Transient) else exc
            log.warning("transient failure on %s %s: %s", delivery.queue, delivery.routing_key, describe(error))
            outcomes = [(delivery, Outcome("retry", describe(error)))]
        if bookkeeping:
            try:
                bookkeeping(outcomes)
                db.session.commit()
            except Exception:
                db.session.rollback()
                raise
        return outcomes

    def _apply_batch(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, Outcome]]:
        """The fast path: every message of the batch in one transaction, no savepoints,
        inbox rows and effects flushed together (one multi-row INSERT per table). Any
        failure (a poison message, a duplicate, the database) makes the caller roll the
        whole batch back and apply its messages one by one, where each is sorted."""
        outcomes: list[tuple[Delivery, Outcome]] = []
        inbox_rows = []
        for delivery, message in _decoded(deliveries, outcomes):
            token = request_id_var.set(message.correlation_id)
            try:
                inbox_rows.append(_inbox_row(delivery, message))
                self.handle(delivery.queue, message)
            finally:
                request_id_var.reset(token)
            outcomes.append((delivery, DONE))
        if inbox_rows:  # a duplicate among them fails the batch: sorted one by one
            db.session.execute(_INBOX_INSERT, inbox_rows)
        db.session.flush()
        return outcomes

    def _apply(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, Outcome]]:
        outcomes: list[tuple[Delivery, Outcome]] = []
        for delivery, message in _decoded(deliveries, outcomes):
            outcomes.append((delivery, self._apply_one(delivery, message)))
        return outcomes

    def _apply_one(self, delivery: Delivery, message: Message) -> Outcome:
        savepoint = db.session.begin_nested()
        token = request_id_var.set(message.correlation_id)
        try:
            try:
                db.session.execute(_INBOX_INSERT, [_inbox_row(delivery, message)])
            except IntegrityError:
                savepoint.rollback()
                return DUPLICATE
            self.handle(delivery.queue, message)
            db.session.flush()  # constraint errors surface here, inside the savepoint
            if savepoint.is_active:
                savepoint.commit()
            return DONE
        except self.permanent as exc:
            if savepoint.is_active:
                savepoint.rollback()
            log.warning("dead-lettering %s from %s: %s", message.type, delivery.queue, describe(exc))
            return Outcome("dead", describe(exc))
        except Exception as exc:
            raise _Transient(delivery, exc) from exc
        finally:
            request_id_var.reset(token)


def _decoded(
    deliveries: Sequence[Delivery], outcomes: list[tuple[Delivery, Outcome]]
) -> Iterator[tuple[Delivery, Message]]:
    """Each delivery with its message; one that cannot be decoded is dead at once (in ``outcomes``)."""
    for delivery in deliveries:
        try:
            message = decode(delivery.routing_key, delivery.body, delivery.message_id, delivery.correlation_id)
        except (ValueError, TypeError) as exc:
            outcomes.append((delivery, Outcome("dead", f"undecodable: {describe(exc)}")))
            continue
        yield delivery, message


# Core, not the unit of work: the inbox rows of a batch go in one multi-row INSERT, and
# a batch that writes nothing else through the ORM has nothing left to flush.
_INBOX_INSERT = insert(InboxMessage.__table__)


def _inbox_row(delivery: Delivery, message: Message) -> dict[str, str]:
    """The row that makes a redelivery of ``message`` on this queue change nothing."""
    return {"consumer": delivery.queue, "message_id": message.id[:128], "type": message.type[:128]}


def settle(delivery: Delivery, outcome: Outcome) -> Outcome:
    """A retry past the last delay queue becomes a dead letter."""
    from messaging.topology import MAX_RETRIES

    if outcome.kind == "retry" and delivery.attempt + 1 > MAX_RETRIES:
        return Outcome("dead", f"gave up after {delivery.attempt + 1} attempts: {outcome.reason}")
    return outcome
