"""The outbox relay for RabbitMQ: publish unsent rows with confirms, mark them sent.

A batch of rows is taken under ``FOR UPDATE SKIP LOCKED`` (several relays share the
work and never publish the same row twice), published ``mandatory`` and persistent
with many confirms in flight at once, and marked sent only for the confirms that came
back positive. A returned (unroutable) or nacked row stays unsent and is tried again
later with a growing pause; rows whose confirm never came stay unsent and are
published again after a reconnect (the consumer's inbox makes that harmless).

The relay wakes on PostgreSQL NOTIFY at commit, so commit-to-publish is milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import pika
from flask import Flask
from pika.exceptions import AMQPError

from extensions import db
from messaging import metrics
from messaging.embedded import postpone, unsent_rows
from messaging.envelope import outgoing
from messaging.topology import EVENTS_EXCHANGE, declare
from messaging.wakeup import OutboxDoorbell
from models.base import utcnow

log = logging.getLogger("carhub.relay")

CONFIRM_TIMEOUT_SECONDS = 30
MAX_BACKOFF_SECONDS = 30


def connection_parameters(url: str, name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = 30
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.client_properties = {"connection_name": name}
    return params


class _Confirms:
    """Publisher-confirm bookkeeping for one channel, many messages in flight."""

    def __init__(self) -> None:
        self.next_tag = 1
        self.outstanding: set[int] = set()
        self.nacked: set[int] = set()
        self.returned: set[str] = set()

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

    def on_return(self, _channel: object, method: object, properties: pika.BasicProperties, _body: bytes) -> None:
        log.warning("broker returned %s (%s)", properties.message_id, method.reply_text)
        self.returned.add(properties.message_id)


class BrokerRelay:
    """Publishes the outbox to RabbitMQ until ``stop`` is set (reconnects by itself)."""

    def __init__(self, app: Flask, url: str, batch_size: int = 500, stop: threading.Event | None = None) -> None:
        self.app, self.url, self.batch_size = app, url, batch_size
        self.stop = stop or threading.Event()
        self.connection: pika.BlockingConnection | None = None
        self.channel = None
        self.confirms = _Confirms()

    def connect(self) -> None:
        self.connection = pika.BlockingConnection(connection_parameters(self.url, "carhub relay"))
        blocking = self.connection.channel()
        declare(blocking)
        # The blocking channel waits for each confirm; its underlying channel lets us
        # keep a whole batch of confirms in flight and wait once.
        self.channel = blocking._impl
        self.confirms = _Confirms()
        self.channel.confirm_delivery(ack_nack_callback=self.confirms.on_confirm)
        self.channel.add_on_return_callback(self.confirms.on_return)
        self.connection.process_data_events(time_limit=0)

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            with contextlib.suppress(Exception):  # it is going away anyway
                self.connection.close()
        self.connection = self.channel = None

    def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were taken (0: nothing due)."""
        if self.connection is None:
            self.connect()
        with self.app.app_context():
            rows = unsent_rows(self.batch_size)
            if not rows:
                db.session.rollback()
                return 0
            try:
                by_tag = self._publish(rows)
            except BaseException:
                db.session.rollback()
                raise
            now, sent = utcnow(), 0
            for tag, row in by_tag.items():
                message_id = outgoing(row, EVENTS_EXCHANGE).properties.message_id
                if tag in self.confirms.nacked:
                    postpone(row, "nacked by the broker")
                elif message_id in self.confirms.returned:
                    postpone(row, f"unroutable: the broker returned {row.type!r} (no queue is bound)")
                else:
                    row.published_at = now
                    sent += 1
            db.session.commit()
            metrics.count("published", sent)
            return len(rows)

    def _publish(self, rows: list) -> dict[int, object]:
        confirms = self.confirms
        confirms.nacked.clear()
        confirms.returned.clear()
        by_tag = {}
        for row in rows:
            message = outgoing(row, EVENTS_EXCHANGE)
            self.channel.basic_publish(
                message.exchange, message.routing_key, message.body, message.properties, mandatory=True
            )
            tag = confirms.next_tag
            confirms.next_tag += 1
            confirms.outstanding.add(tag)
            by_tag[tag] = row
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while confirms.outstanding:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(confirms.outstanding)} confirms did not come back")
            self.connection.process_data_events(time_limit=0.05)
        return by_tag

    def run(self) -> None:
        doorbell = OutboxDoorbell(self.app.config["SQLALCHEMY_DATABASE_URI"])
        backoff = 0.5
        log.info("relay started")
        try:
            while not self.stop.is_set():
                try:
                    taken = self.publish_pending()
                    backoff = 0.5
                    if taken < self.batch_size:
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
