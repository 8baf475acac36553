"""The RabbitMQ consumer: pika I/O on one thread, handlers on another.

The I/O thread only moves frames (so heartbeats are answered however slow a handler
is): it hands deliveries to the work thread through a queue and runs what the work
thread schedules back with ``add_callback_threadsafe`` (acks, retry and dead-letter
publishes), because a pika connection belongs to one thread. The work thread takes
what has arrived (up to ``batch_size``), applies it in one transaction (savepoint per
message, see ``processing``), and only after the commit asks for the acks. Retries go
to the queue's delay queue through the default exchange, dead letters to
``carhub.dlx`` with ``x-carhub-error`` / ``x-carhub-failed-queue``; both are confirmed
by the broker before the original is acked, so a crash at any point redelivers
instead of losing. The worker also copies ``carhub.dead-letters.log`` into the
``dead_letters`` table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from functools import partial
from typing import Any

import pika
from flask import Flask
from pika.exceptions import AMQPError

from extensions import db
from messaging import metrics
from messaging.embedded import dead_letter_row
from messaging.processing import Delivery, Handle, Outcome, Processor, settle
from messaging.relay import MAX_BACKOFF_SECONDS, connection_parameters
from messaging.topology import (
    ATTEMPT_HEADER,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTER_LOG_QUEUE,
    ERROR_HEADER,
    FAILED_QUEUE_HEADER,
    ROUTING_KEY_HEADER,
    WORK_QUEUES,
    declare,
    retry_queue,
)
from models.base import new_id
from models.messaging import DeadLetter

log = logging.getLogger("carhub.consumer")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class BrokerConsumer:
    """Consumes every work queue until ``stop`` is set; reconnects with capped back-off."""

    def __init__(
        self,
        app: Flask,
        url: str,
        handle: Handle,
        permanent: tuple[type[BaseException], ...],
        queues: tuple[str, ...] | None = None,
        prefetch: int = 200,
        batch_size: int = 100,
        stop: threading.Event | None = None,
        ack_delay: float = 0.0,
        heartbeat: int = 30,
    ) -> None:
        self.app, self.url = app, url
        self.ack_delay = ack_delay  # tests only: widen the window between commit and ack
        self.heartbeat = heartbeat
        self.processor = Processor(handle, permanent)
        self.queues = queues or tuple(work.name for work in WORK_QUEUES)
        self.prefetch, self.batch_size = prefetch, batch_size
        self.stop = stop or threading.Event()
        self.received: queue.Queue[Delivery] = queue.Queue()
        self.generation = 0
        self.unsettled: set[tuple[int, int]] = set()  # (generation, delivery tag), I/O thread only
        self.connection: pika.BlockingConnection | None = None
        self.channel = self.publisher = None
        self.ready = threading.Event()  # set while consuming (tests wait on it)

    # --- I/O thread --------------------------------------------------------------------

    def run(self) -> None:
        worker = threading.Thread(target=self._work, name="carhub-consumer-work", daemon=True)
        worker.start()
        backoff = 0.5
        try:
            while not self.stop.is_set():
                try:
                    self._connect()
                    backoff = 0.5
                    while not self.stop.is_set():
                        self.connection.process_data_events(time_limit=0.2)
                    self._drain_and_close()
                except (AMQPError, OSError) as exc:
                    self.ready.clear()
                    log.warning("consumer lost the broker (%s); reconnecting in %.1fs", exc, backoff)
                    self._forget_connection()
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        finally:
            self.ready.clear()
            self._forget_connection()
            self.received.put(None)  # wake the work thread so it sees stop
            worker.join(timeout=30)
        log.info("consumer stopped")

    def _connect(self) -> None:
        self.connection = pika.BlockingConnection(connection_parameters(self.url, "carhub consumer", self.heartbeat))
        self.generation += 1
        self.unsettled.clear()
        self.channel = self.connection.channel()
        declare(self.channel)
        self.channel.basic_qos(prefetch_count=self.prefetch)
        self.publisher = self.connection.channel()
        self.publisher.confirm_delivery()
        for name in self.queues:
            self.channel.basic_consume(name, partial(self._on_message, name))
        self.channel.basic_consume(DEAD_LETTER_LOG_QUEUE, partial(self._on_message, DEAD_LETTER_LOG_QUEUE))
        self.ready.set()
        log.info("consuming %s", ", ".join(self.queues))

    def _on_message(self, queue_name: str, _channel: object, method: Any, properties: Any, body: bytes) -> None:
        headers = dict(properties.headers or {})
        routing_key = _text(headers.get(ROUTING_KEY_HEADER)) or method.routing_key
        tag = (self.generation, method.delivery_tag)
        self.unsettled.add(tag)
        self.received.put(
            Delivery(
                queue=queue_name,
                routing_key=routing_key,
                body=body,
                message_id=properties.message_id,
                correlation_id=properties.correlation_id,
                content_type=properties.content_type,
                attempt=int(headers.get(ATTEMPT_HEADER) or 0),
                headers=headers,
                tag=tag,
            )
        )

    def _drain_and_close(self) -> None:
        """SIGTERM: stop taking messages, finish and ack what was taken, close."""
        self.ready.clear()
        try:
            for tag in list(self.channel.consumer_tags):
                self.channel.basic_cancel(tag)
            deadline = time.monotonic() + 30
            while self.unsettled and time.monotonic() < deadline:
                self.connection.process_data_events(time_limit=0.1)
            self.connection.close()
        finally:
            self._forget_connection()

    def _forget_connection(self) -> None:
        if self.connection is not None and self.connection.is_open:
            with contextlib.suppress(Exception):  # it is going away anyway
                self.connection.close()
        self.connection = self.channel = self.publisher = None
        self.generation += 1  # whatever is still queued from it can no longer be acked
        self.unsettled.clear()

    def _settle(self, results: list[tuple[Delivery, Outcome]]) -> None:
        """Runs on the I/O thread: publish retries and dead letters (confirmed), then ack."""
        channel = self.channel
        for delivery, outcome in results:
            generation, tag = delivery.tag
            if generation != self.generation or channel is None:
                continue  # that channel is gone: the broker redelivers, the inbox dedups
            try:
                if outcome.kind == "requeue":
                    channel.basic_nack(tag, requeue=True)
                    self.unsettled.discard(delivery.tag)
                    continue
                if outcome.kind == "retry":
                    self._publish_retry(delivery, outcome)
                elif outcome.kind == "dead":
                    self._publish_dead_letter(delivery, outcome)
                channel.basic_ack(tag)
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
                log.error("could not move %s (%s); requeueing", delivery.message_id, exc)
                channel.basic_nack(tag, requeue=True)
            self.unsettled.discard(delivery.tag)

    def _properties(self, delivery: Delivery, headers: dict[str, Any]) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type=delivery.content_type,
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id,
            delivery_mode=pika.DeliveryMode.Persistent,
            app_id="carhub",
            type=delivery.routing_key,
            timestamp=int(time.time()),
            headers=headers,
        )

    def _publish_retry(self, delivery: Delivery, outcome: Outcome) -> None:
        attempt = delivery.attempt + 1
        headers = {
            **delivery.headers,
            ATTEMPT_HEADER: attempt,
            ROUTING_KEY_HEADER: delivery.routing_key,
            ERROR_HEADER: outcome.reason[:250],
        }
        target = retry_queue(delivery.queue, attempt)
        self.publisher.basic_publish("", target, delivery.body, self._properties(delivery, headers), mandatory=True)

    def _publish_dead_letter(self, delivery: Delivery, outcome: Outcome) -> None:
        headers = {
            **delivery.headers,
            ERROR_HEADER: outcome.reason[:1000],
            FAILED_QUEUE_HEADER: delivery.queue,
            ROUTING_KEY_HEADER: delivery.routing_key,
            ATTEMPT_HEADER: delivery.attempt,
            DEAD_LETTER_ID_HEADER: new_id(),
        }
        self.publisher.basic_publish(
            DEAD_LETTER_EXCHANGE,
            delivery.routing_key,
            delivery.body,
            self._properties(delivery, headers),
            mandatory=True,
        )

    # --- work thread -------------------------------------------------------------------

    def _take_batch(self) -> list[Delivery]:
        try:
            first = self.received.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first] if first is not None else []
        while len(batch) < self.batch_size:
            try:
                item = self.received.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                batch.append(item)
        return [delivery for delivery in batch if delivery.tag[0] == self.generation]

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                if self.stop.is_set() and self.connection is None:
                    return
                continue
            work = [d for d in batch if d.queue != DEAD_LETTER_LOG_QUEUE]
            logged = [d for d in batch if d.queue == DEAD_LETTER_LOG_QUEUE]
            results: list[tuple[Delivery, Outcome]] = []
            try:
                with self.app.app_context():
                    if work:
                        outcomes = self.processor.run(work)
                        results.extend((d, settle(d, o)) for d, o in outcomes)
                        metrics.count_outcomes(results)
                    if logged:
                        results.extend(self._log_dead_letters(logged))
            except Exception:
                # Only the dead-letter copy can get here (the processor sorts handler
                # failures), e.g. the database is down: give them back, after a pause
                # so that a database outage does not become a hot loop.
                log.exception("could not record %d dead letters; requeueing them", len(logged))
                results.extend((delivery, Outcome("requeue")) for delivery in logged)
                self.stop.wait(1.0)
            if self.ack_delay and results:
                log.info("committed %d; acking in %.1fs", len(results), self.ack_delay)
                time.sleep(self.ack_delay)
            connection = self.connection
            if connection is not None and results:
                try:
                    connection.add_callback_threadsafe(partial(self._settle, results))
                except Exception:  # noqa: BLE001 - connection closing: the broker redelivers
                    log.info("connection went away before acking %d messages", len(results))

    @staticmethod
    def _log_dead_letters(deliveries: list[Delivery]) -> list[tuple[Delivery, Outcome]]:
        """Copy what reached carhub.dlx into the dead_letters table (once per dead letter)."""
        for delivery in deliveries:
            headers = delivery.headers
            deaths = headers.get("x-death") or [{}]
            death = deaths[0] if isinstance(deaths, list) and deaths else {}
            reason = _text(headers.get(ERROR_HEADER)) or f"broker dead-lettered it ({_text(death.get('reason'))})"
            failed_queue = _text(headers.get(FAILED_QUEUE_HEADER)) or _text(death.get("queue"))
            keys = death.get("routing-keys") or []
            routing_key = _text(headers.get(ROUTING_KEY_HEADER)) or (_text(keys[0]) if keys else delivery.routing_key)
            identity = (
                _text(headers.get(DEAD_LETTER_ID_HEADER))
                or hashlib.sha256(delivery.body + json.dumps(death, default=str, sort_keys=True).encode()).hexdigest()[
                    :64
                ]
            )
            if db.session.get(DeadLetter, identity) is not None:
                continue
            original = Delivery(
                queue=failed_queue or "",
                routing_key=routing_key,
                body=delivery.body,
                message_id=delivery.message_id,
                correlation_id=delivery.correlation_id,
                content_type=delivery.content_type,
                attempt=int(headers.get(ATTEMPT_HEADER) or death.get("count") or 0),
                headers={k: _text(v) for k, v in headers.items() if k.startswith("x-carhub")},
            )
            db.session.add(dead_letter_row(original, reason, dead_letter_id=identity))
        db.session.commit()
        return [(delivery, Outcome("done")) for delivery in deliveries]
