"""The worker process: outbox relay and consumers (``python consumer.py``).

``python consumer.py`` is a small supervisor: it runs the worker as a child process and
starts it again (with a capped pause) whenever it dies, and on SIGTERM/SIGINT passes
the signal on and waits for the child to finish its in-flight work.
``python consumer.py --single`` is the worker itself (compose, whose restart policy
supervises, and tests, which SIGKILL it).

This is the only place that joins the messaging runtime to the service layer: a
decoded message becomes a ``services.handlers.Event`` and goes to ``dispatch``. With
``RABBITMQ_URL`` the relay and the consumer talk to RabbitMQ; without it, the
embedded worker uses the outbox table as the queue, with the same rules.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from marshmallow import ValidationError
from sqlalchemy.exc import DataError

from messaging.envelope import Message
from services.errors import DomainError, InvalidMessage
from services.handlers import Event, dispatch

log = logging.getLogger("carhub.worker")

# Failures that can never succeed: dead-letter at once. Anything else is transient.
PERMANENT: tuple[type[BaseException], ...] = (
    InvalidMessage,
    DomainError,
    ValidationError,
    ValueError,
    KeyError,
    TypeError,
    DataError,  # a value the database refuses as data (NUL, out of range) never will be taken
)


def handle(queue: str, message: Message) -> None:
    """The door from the runtime into the services: one decoded message, one handler."""
    dispatch(
        queue,
        Event(
            id=message.id,
            type=message.type,
            data=message.data,
            source=message.source,
            subject=message.subject,
            time=message.time,
            correlation_id=message.correlation_id,
            extensions=message.extensions,
        ),
    )


def run_worker(stop: threading.Event) -> None:
    """Run relay and consumer (or the embedded worker) until ``stop`` is set."""
    from app import create_app

    app = create_app()
    # The loaded app is most of the heap and lives as long as the process: keep full
    # collections from scanning it (each one paused relay and consumer for 50-100 ms).
    gc.freeze()
    logging.getLogger("pika").setLevel(logging.WARNING)
    url = app.config["RABBITMQ_URL"]
    if not url:
        from messaging.embedded import EmbeddedWorker

        EmbeddedWorker(app, handle, PERMANENT, stop=stop).run()
        return
    from messaging.broker import BrokerConsumer
    from messaging.relay import BrokerRelay

    relay = threading.Thread(target=BrokerRelay(app, url, stop=stop).run, name="carhub-relay", daemon=True)
    relay.start()
    # CARHUB_TEST_ACK_DELAY_SECONDS: tests widen the commit-to-ack window to SIGKILL in it.
    ack_delay = float(os.environ.get("CARHUB_TEST_ACK_DELAY_SECONDS") or 0)
    BrokerConsumer(app, url, handle, PERMANENT, stop=stop, ack_delay=ack_delay).run()
    relay.join(timeout=30)


def single() -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing in-flight work", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _die_with_parent()
    run_worker(stop)
    return 0


def _die_with_parent() -> None:
    """Linux: if the supervisor is SIGKILLed, its worker gets SIGTERM (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def supervise() -> int:
    """Keep one worker running; restart it when it dies; stop it cleanly on a signal."""
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pause = 0.5
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, __file__, "--single"])
        while child.poll() is None:
            time.sleep(0.2)
        if stopping:
            break
        if time.monotonic() - started > 60:
            pause = 0.5
        log.warning("worker exited with %s; starting another in %.1fs", child.returncode, pause)
        time.sleep(pause)
        pause = min(pause * 2, 30)
    if child is not None:
        try:
            child.wait(timeout=40)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", action="store_true", help="run the worker in this process, unsupervised")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    return single() if args.single else supervise()


if __name__ == "__main__":
    sys.exit(main())
