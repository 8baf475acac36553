"""Relay throughput: outbox rows confirmed per second vs raw pika with confirms.

Run: ``.venv/bin/python -m bench.relay [--rows 5000]`` (PostgreSQL + RabbitMQ of this
machine, a database and vhost of its own; well under a minute).

Baselines, same message bodies, same vhost, same queue, in the same run:
* raw pika, one confirm at a time (``BlockingChannel.basic_publish`` on a confirming
  channel waits for each);
* raw pika, pipelined: publish everything, then wait for the confirms (the best raw
  figure this machine gives; the broker acks with ``multiple``).
The relay: rows inserted in the outbox beforehand, then timed from the first SELECT to
the last commit marking rows sent (FOR UPDATE SKIP LOCKED, publish with confirms in
flight, mark sent, commit), batch size 1000 (the worker's default). Goal: relay >= 0.5x the best raw figure.
"""

from __future__ import annotations

import argparse
import json
import time

import pika

from bench.messaging_env import backbone, cores, depth, purge

QUEUE = "carhub.notifications"
GOAL = 0.5


def body(n: int) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"raw-{n}",
            "source": "carhub/cars",
            "type": "car.created",
            "time": "2026-11-22T10:00:00Z",
            "subject": f"car-{n}",
            "datacontenttype": "application/json",
            "data": {"id": f"car-{n}", "vin": "WVWZZZ1JZXW000001", "make": "VW", "model": "Golf", "year": 2019},
        }
    ).encode()


def properties(n: int) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/cloudevents+json",
        message_id=f"raw-{n}",
        type="car.created",
        app_id="carhub",
        delivery_mode=2,
        timestamp=int(time.time()),
    )


def raw_one_by_one(url: str, rows: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    started = time.perf_counter()
    for n in range(rows):
        channel.basic_publish("carhub.events", "car.created", body(n), properties(n), mandatory=True)
    elapsed = time.perf_counter() - started
    connection.close()
    return rows / elapsed


def raw_pipelined(url: str, rows: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()._impl
    pending = set()

    def on_confirm(frame: object) -> None:
        tag = frame.method.delivery_tag
        if frame.method.multiple:
            pending.difference_update([t for t in pending if t <= tag])
        else:
            pending.discard(tag)

    channel.confirm_delivery(ack_nack_callback=on_confirm)
    connection.process_data_events(time_limit=0)
    started = time.perf_counter()
    for n in range(rows):
        channel.basic_publish("carhub.events", "car.created", body(n), properties(n), mandatory=True)
        pending.add(n + 1)
    while pending:
        connection.process_data_events(time_limit=0.01)
    elapsed = time.perf_counter() - started
    connection.close()
    return rows / elapsed


def relay(env: object, rows: int) -> float:
    from extensions import db
    from messaging.relay import BrokerRelay
    from services.events import record_event

    with env.app.app_context():
        for n in range(rows):
            record_event("car.created", f"car-{n}", json.loads(body(n))["data"])
            if n % 1000 == 999:
                db.session.commit()
        db.session.commit()
    relay = BrokerRelay(env.app, env.rabbitmq_url, batch_size=1000)
    relay.connect()
    started = time.perf_counter()
    sent = relay.drain()
    elapsed = time.perf_counter() - started
    relay.close()
    assert sent == rows, (sent, rows)
    return rows / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"bench.relay: {args.rows} messages per measurement, {args.rounds} rounds; {cores()}")
    results: dict[str, list[float]] = {"raw pika, confirm each": [], "raw pika, pipelined confirms": [], "relay": []}
    with backbone() as env:
        for _ in range(args.rounds):
            for label, run in (
                ("raw pika, confirm each", lambda: raw_one_by_one(env.rabbitmq_url, args.rows)),
                ("raw pika, pipelined confirms", lambda: raw_pipelined(env.rabbitmq_url, args.rows)),
                ("relay", lambda: relay(env, args.rows)),
            ):
                purge(env.rabbitmq_url, QUEUE)
                results[label].append(run())
                assert depth(env.rabbitmq_url, QUEUE) == args.rows
    best_raw = max(max(results["raw pika, confirm each"]), max(results["raw pika, pipelined confirms"]))
    print(f"{'':32}{'best msg/s':>12}{'all rounds':>30}{'x best raw':>12}")
    for label, values in results.items():
        rounds = ", ".join(f"{value:,.0f}" for value in values)
        print(f"{label:32}{max(values):>12,.0f}{rounds:>30}{max(values) / best_raw:>12.2f}")
    ratio = max(results["relay"]) / best_raw
    print(f"goal: relay >= {GOAL}x best raw pika -> {ratio:.2f}x {'MET' if ratio >= GOAL else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
