"""The outbox relay for RabbitMQ: publish unsent rows with confirms, mark them sent.

A batch of rows is taken and marked sent by one UPDATE under ``FOR UPDATE SKIP LOCKED``
(several relays share the work and never publish the same row twice), published
persistent and ``mandatory`` (except ``topology.BROADCAST_EVENTS``) with many confirms
in flight at once, and the transaction commits only once the broker has confirmed. A
returned (unroutable) or nacked row is put back unsent before that commit and tried
again later with a growing pause; if the confirms never come, the transaction rolls
back and the rows are published again after a reconnect (the consumer's inbox makes
that harmless).

The relay wakes on PostgreSQL NOTIFY at commit, so commit-to-publish is milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pika
from flask import Flask
from pika.exceptions import AMQPError
from sqlalchemy import Connection, Engine, Row, bindparam, update

from extensions import db
from messaging import metrics
from messaging.embedded import postponed_until, unsent_query
from messaging.envelope import outgoing
from messaging.topology import EVENTS_EXCHANGE, declare, must_be_routed
from messaging.wakeup import OutboxDoorbell
from models.base import utcnow
from models.messaging import OutboxMessage

log = logging.getLogger("carhub.relay")

CONFIRM_TIMEOUT_SECONDS = 30
MAX_BACKOFF_SECONDS = 30


def connection_parameters(url: str, name: str, heartbeat: int = 30) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.client_properties = {"connection_name": name}
    return params


class _Confirms:
    """Publisher-confirm bookkeeping for one channel, many messages in flight.

    Confirms arrive as callbacks of the underlying channel, which pika's blocking
    connection does not count as events: ``process_data_events(time_limit=...)`` would
    sit out its whole time limit. ``wake`` ends that wait once the awaited tags are in.
    """

    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self.next_tag = 1
        self.outstanding: set[int] = set()
        self.nacked: set[int] = set()
        self.returned: set[str] = set()
        self.awaited: set[int] = set()
        self.wake = wake

    def on_confirm(self, frame: object) -> None:
        method = frame.method
        tags = (
            {tag for tag in self.outstanding if tag <= method.delivery_tag}
            if method.multiple
            else {method.delivery_tag}
        )
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked |= tags
        self.outstanding -= tags
        if self.awaited and self.awaited.isdisjoint(self.outstanding):
            self.awaited = set()
            self.wake()

    def on_return(self, _channel: object, method: object, properties: pika.BasicProperties, _body: bytes) -> None:
        log.warning("broker returned %s (%s)", properties.message_id, method.reply_text)
        self.returned.add(properties.message_id)


def _nothing() -> None:
    """Scheduled only to make pika's blocking connection return from its wait."""


class _Outbox:
    """The relay's statements on the outbox, built once, and the connections it keeps.

    The relay is the outbox's hot path: building a statement, opening a Session and
    checking a connection out of the pool (with its ping) cost several times what the
    statements themselves do at one row per wake. A connection that failed is dropped,
    and with it the idle ones (the database may have restarted).
    """

    def __init__(self, engine: Engine, batch_size: int) -> None:
        self.engine = engine
        self.idle: list[Connection] = []
        table = OutboxMessage.__table__
        # One statement takes the due rows and marks them sent, in a transaction that
        # commits only once the broker has confirmed them (a nacked or returned row is
        # put back first; any failure rolls the marks back). FOR UPDATE SKIP LOCKED lets
        # several relays share the work on PostgreSQL (SQLite renders no lock).
        due = unsent_query(table.c.id).limit(batch_size).with_for_update(skip_locked=True)
        self.take = update(table).where(table.c.id.in_(due)).values(published_at=bindparam("now")).returning(*table.c)
        self.postpone = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(
                published_at=None,
                attempts=bindparam("attempts"),
                last_error=bindparam("error"),
                next_attempt_at=bindparam("until"),
            )
        )

    def connection(self) -> Connection:
        return self.idle.pop() if self.idle else self.engine.connect()

    def release(self, connection: Connection, *, failed: bool = False) -> None:
        if not failed:
            self.idle.append(connection)
            return
        with contextlib.suppress(Exception):  # it may be the broken one
            connection.rollback()
        connection.close()
        self.close()

    def close(self) -> None:
        while self.idle:
            with contextlib.suppress(Exception):
                self.idle.pop().close()


@dataclass
class _Batch:
    """Rows taken (and locked) in their own transaction, and their confirm tags."""

    connection: Connection
    rows: list[Row]
    by_tag: dict[int, tuple[Row, str]] = field(default_factory=dict)


class BrokerRelay:
    """Publishes the outbox to RabbitMQ until ``stop`` is set (reconnects by itself)."""

    def __init__(self, app: Flask, url: str, batch_size: int = 1000, stop: threading.Event | None = None) -> None:
        self.app, self.url, self.batch_size = app, url, batch_size
        self.stop = stop or threading.Event()
        self.connection: pika.BlockingConnection | None = None
        self.channel = None
        self.confirms = _Confirms()
        with app.app_context():
            self.outbox = _Outbox(db.engine, batch_size)
        self.pipelined = self.outbox.engine.dialect.name == "postgresql"

    def connect(self) -> None:
        self.connection = pika.BlockingConnection(connection_parameters(self.url, "carhub relay"))
        blocking = self.connection.channel()
        declare(blocking)
        # The blocking channel waits for each confirm; its underlying channel lets us
        # keep a whole batch of confirms in flight and wait once.
        self.channel = blocking._impl
        connection = self.connection
        self.confirms = _Confirms(wake=lambda: connection.add_callback_threadsafe(_nothing))
        self.channel.confirm_delivery(ack_nack_callback=self.confirms.on_confirm)
        self.channel.add_on_return_callback(self.confirms.on_return)
        self.connection.process_data_events(time_limit=0)

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            with contextlib.suppress(Exception):  # it is going away anyway
                self.connection.close()
        self.connection = self.channel = None
        self.outbox.close()

    def publish_pending(self) -> int:
        """Publish one batch and wait for it; returns how many rows were taken (0: none due)."""
        if self.connection is None:
            self.connect()
        batch = self._take()
        if batch is None:
            return 0
        self._send(batch)
        self._settle(batch)
        return len(batch.rows)

    def drain(self) -> int:
        """Publish until nothing is due; returns how many rows were taken.

        On PostgreSQL two batches are in flight: while the broker confirms one, the
        next is selected (SKIP LOCKED passes over the rows the first still locks) and
        published, in a second transaction. SQLite has no row locks: one at a time.
        """
        if self.connection is None:
            self.connect()
        total = 0
        previous: _Batch | None = None
        current: _Batch | None = None
        try:
            while True:
                # A batch that was not full took everything due at the time: what
                # committed since rang the doorbell, so selecting again now would
                # only find nothing (one wasted transaction per wake at low load).
                more_due = previous is None or len(previous.rows) >= self.batch_size
                current = self._take() if more_due else None
                if current is not None:
                    self._send(current)
                    # Frames leave only when pika's I/O loop runs: flush them now, so
                    # the broker routes this batch while the next one is selected.
                    self.connection.process_data_events(time_limit=0)
                    total += len(current.rows)
                if previous is not None:
                    self._settle(previous)
                previous = current
                if current is None:
                    return total
                if not self.pipelined:
                    self._settle(current)
                    previous = None
                    if len(current.rows) < self.batch_size:
                        return total
        except BaseException:
            # Release every batch still open: a forgotten transaction would keep its
            # rows locked, and SKIP LOCKED would pass over them for good.
            for batch in (previous, current):
                if batch is not None and not batch.connection.closed:
                    self.outbox.release(batch.connection, failed=True)
            raise

    def _take(self) -> _Batch | None:
        connection = self.outbox.connection()
        try:
            # Plain rows, not ORM objects: the relay only reads them. Oldest first.
            rows = sorted(
                connection.execute(self.outbox.take, {"now": utcnow()}), key=lambda row: (row.created_at, row.id)
            )
        except BaseException:
            self.outbox.release(connection, failed=True)
            raise
        if not rows:
            connection.rollback()
            self.outbox.release(connection)
            return None
        return _Batch(connection, rows)

    def _send(self, batch: _Batch) -> None:
        """Publish the batch's rows without waiting for their confirms."""
        confirms = self.confirms
        try:
            for row in batch.rows:
                message = outgoing(row, EVENTS_EXCHANGE)
                self.channel.basic_publish(
                    message.exchange,
                    message.routing_key,
                    message.body,
                    message.properties,
                    mandatory=must_be_routed(message.routing_key),
                )
                tag = confirms.next_tag
                confirms.next_tag += 1
                confirms.outstanding.add(tag)
                batch.by_tag[tag] = (row, message.properties.message_id)
        except BaseException:
            self.outbox.release(batch.connection, failed=True)
            raise

    def _settle(self, batch: _Batch) -> int:
        """Wait for the batch's confirms, put back the rows the broker refused, commit."""
        confirms, connection = self.confirms, batch.connection
        try:
            deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
            confirms.awaited = set(batch.by_tag) & confirms.outstanding
            while not confirms.outstanding.isdisjoint(batch.by_tag):
                if time.monotonic() > deadline:
                    raise TimeoutError("confirms did not come back")
                self.connection.process_data_events(time_limit=0.1)  # woken by the last confirm
            sent = 0
            for tag, (row, message_id) in batch.by_tag.items():
                if tag in confirms.nacked:
                    confirms.nacked.discard(tag)
                    self._postpone(connection, row, "nacked by the broker")
                elif message_id in confirms.returned:
                    self._postpone(connection, row, f"unroutable: the broker returned {row.type!r} (no queue is bound)")
                else:
                    sent += 1
            confirms.returned.difference_update(message_id for _, message_id in batch.by_tag.values())
            connection.commit()
        except BaseException:
            self.outbox.release(connection, failed=True)
            raise
        self.outbox.release(connection)
        metrics.count("published", sent)
        return sent

    def _postpone(self, connection: Connection, row: Row, error: str) -> None:
        """A returned or nacked row stays unsent and waits (see ``embedded.postpone``)."""
        attempts = (row.attempts or 0) + 1
        connection.execute(
            self.outbox.postpone,
            {"row_id": row.id, "attempts": attempts, "error": error[:1000], "until": postponed_until(attempts)},
        )

    def run(self) -> None:
        doorbell = OutboxDoorbell(self.app.config["SQLALCHEMY_DATABASE_URI"])
        backoff = 0.5
        log.info("relay started")
        try:
            while not self.stop.is_set():
                try:
                    self.drain()
                    backoff = 0.5
                    self.connection.process_data_events(time_limit=0)
                    doorbell.wait(0.5)
                except (AMQPError, OSError, TimeoutError) as exc:
                    log.warning("relay lost the broker (%s); reconnecting in %.1fs", exc, backoff)
                    self.close()
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                except Exception:
                    log.exception("relay step failed; retrying in %.1fs", backoff)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        finally:
            doorbell.close()
            self.close()
        log.info("relay stopped")
