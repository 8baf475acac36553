"""Consumer throughput: messages handled and committed per second vs the bare transaction.

Run: ``.venv/bin/python -m bench.consumer [--messages 3000]`` (PostgreSQL + RabbitMQ of
this machine, a database and vhost of its own; under a minute).

Baseline: the same work a ``car.created`` message causes on ``carhub.notifications``
(insert the inbox row, look up the owner, insert the notification) executed bare in a
loop, one transaction per message, no broker at all. Measured: the real consumer
runtime (``messaging.broker.BrokerConsumer`` with ``consumer.handle``) on a queue
preloaded with the same number of messages, from "consuming" until the last one is
committed and acked. Batching (one transaction per batch, savepoint per message, one
ack per batch) is what lets it beat the loop. Goal: >= 1.0x.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

import pika

from bench.messaging_env import backbone, cores, depth, purge

QUEUE = "carhub.notifications"
GOAL = 1.0


def event(owner_id: str) -> tuple[str, bytes]:
    event_id = str(uuid.uuid4())
    body = {
        "specversion": "1.0",
        "id": event_id,
        "source": "carhub/cars",
        "type": "car.created",
        "time": "2026-11-22T10:00:00Z",
        "subject": event_id,
        "datacontenttype": "application/json",
        "data": {"id": event_id, "owner_id": owner_id, "make": "VW", "model": "Golf", "vin": "WVWZZZ1JZXW000001"},
    }
    return event_id, json.dumps(body).encode()


def bare_loop(env, owner_id: str, messages: int) -> float:
    from consumer import handle
    from extensions import db
    from messaging.envelope import decode
    from models.messaging import InboxMessage

    bodies = [event(owner_id) for _ in range(messages)]
    started = time.perf_counter()
    with env.app.app_context():
        for event_id, body in bodies:
            message = decode("car.created", body, event_id)
            db.session.add(InboxMessage(consumer=QUEUE, message_id=message.id, type=message.type))
            handle(QUEUE, message)
            db.session.commit()
    return messages / (time.perf_counter() - started)


def preload(url: str, owner_id: str, messages: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    for _ in range(messages):
        event_id, body = event(owner_id)
        channel.basic_publish(
            "carhub.events",
            "car.created",
            body,
            pika.BasicProperties(message_id=event_id, delivery_mode=2, content_type="application/cloudevents+json"),
        )
    connection.close()


def consumer_runtime(env, owner_id: str, messages: int, batch_size: int) -> float:
    from consumer import PERMANENT, handle
    from messaging.broker import BrokerConsumer
    from messaging.metrics import MESSAGES

    purge(env.rabbitmq_url, QUEUE)
    preload(env.rabbitmq_url, owner_id, messages)
    assert depth(env.rabbitmq_url, QUEUE) == messages
    consumed = MESSAGES.labels("consumed")
    before = consumed._value.get()
    runtime = BrokerConsumer(env.app, env.rabbitmq_url, handle, PERMANENT, batch_size=batch_size, prefetch=500)
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    runtime.ready.wait(30)
    started = time.perf_counter()
    while consumed._value.get() - before < messages:
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    runtime.stop.set()
    thread.join(30)
    assert depth(env.rabbitmq_url, QUEUE) == 0
    return messages / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    print(f"bench.consumer: {args.messages} messages per measurement, {args.rounds} rounds; {cores()}")
    results: dict[str, list[float]] = {"bare transaction loop": [], f"consumer (batch {args.batch_size})": []}
    with backbone() as env:
        from services import users

        with env.app.app_context():
            owner = users.create_user(f"owner-{uuid.uuid4().hex[:6]}@example.com", "long-enough-pw", "Owner")
            owner_id = owner.id
        for _ in range(args.rounds):
            results["bare transaction loop"].append(bare_loop(env, owner_id, args.messages))
            results[f"consumer (batch {args.batch_size})"].append(
                consumer_runtime(env, owner_id, args.messages, args.batch_size)
            )
    baseline = max(results["bare transaction loop"])
    print(f"{'':32}{'best msg/s':>12}{'all rounds':>24}{'x bare':>10}")
    for label, values in results.items():
        rounds = ", ".join(f"{value:,.0f}" for value in values)
        print(f"{label:32}{max(values):>12,.0f}{rounds:>24}{max(values) / baseline:>10.2f}")
    ratio = max(results[f"consumer (batch {args.batch_size})"]) / baseline
    print(f"goal: consumer >= {GOAL}x the bare loop -> {ratio:.2f}x {'MET' if ratio >= GOAL else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
