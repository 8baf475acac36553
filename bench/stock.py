"""Stock: commands applied per second by the consumer path, and the cached stock read.

Run: ``.venv/bin/python -m bench.stock`` (PostgreSQL and Redis of this machine; a
database and a Redis prefix of its own, dropped at the end; about two minutes).
``--skip-http`` or ``--skip-consumer`` runs one half.

1. Consumer path vs bare SQL, same run, interleaved rounds, medians. Every variant
   applies its own fresh set of pending stock commands (as POST /stock/commands leaves
   them: a command row and its outbox event) on 20 skus, never going below zero:
   * ``consumer batch=100``: ``messaging.processing.Processor`` with ``consumer.handle``
     — decode the CloudEvent, inbox row, ``services.stock.handle_command`` (one
     statement claims the command, applies the conditional change and writes the ledger
     row; the ``stock.changed`` outbox row; cache invalidation after commit), one
     transaction per 100 messages, as the RabbitMQ consumer runs it;
   * ``consumer batch=1``: the same, one transaction (and savepoint) per message;
   * ``bare per-command``: the same SQL (inbox row, claim-and-apply, outbox row,
     COMMIT, with the outbox trigger's NOTIFY) over one raw psycopg connection in one
     loop, one commit per command — what a hand-written consumer loop would do;
   * ``bare batch=100``: the same SQL in the consumer's batch shape (multi-row inbox
     and outbox INSERTs, one commit per 100) — the floor of that shape.
   The goal (>= 1.0x) is the consumer as deployed (batch=100) against the bare loop;
   the other ratios show where the time goes.
2. ``GET /api/v1/warehouses/main/products/{sku}`` on carhub (Redis cache) and on
   carhub with NullCache vs a bare Flask endpoint returning the same document, three
   gunicorns with the same settings, the shared load harness (``bench/harness.py``).
   Goal: cached >= 0.6x bare.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify

from bench.harness import GunicornSettings, LoadResult, format_table, ratio, serve

CONSUMER_GOAL = 1.0
READ_GOAL = 0.6
SKUS = 20
LEVEL_DOC = {"warehouse_id": "main", "sku": "SKU-0", "qty": 1234, "updated_at": "2026-11-22T05:00:00.000000+00:00"}


def bare_app() -> Flask:
    """The read baseline: one JSON endpoint returning a stock level document."""
    app = Flask(__name__)

    @app.get("/level")
    def level() -> Response:
        return jsonify(LEVEL_DOC)

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    return app


def main(argv: list[str] | None = None) -> int:
    from bench.api import create_database, drop_database, forget_redis_keys

    args = parse_args(argv)
    tag = f"carhub_bench_stock_{os.getpid()}"
    prefix = f"{tag}:"
    database_url = create_database(tag)
    try:
        app = prepare(database_url, prefix)
        if not args.skip_consumer:
            consumer_bench(app, database_url, args)
        if not args.skip_http:
            read_bench(database_url, prefix, args)
    finally:
        drop_database(tag)
        forget_redis_keys(prefix)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stock", description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=2000, help="commands per variant per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per HTTP phase (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="HTTP warm-up seconds (default 2)")
    parser.add_argument("--connections", type=int, default=4, help="HTTP connections (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-consumer", action="store_true")
    return parser.parse_args(argv)


def prepare(database_url: str, prefix: str) -> Flask:
    """Tables, the main warehouse and a staff user; an in-process app like the worker's."""
    from bench.api import REDIS_URL, STAFF_EMAIL, STAFF_PASSWORD

    os.environ.update(DATABASE_URL=database_url, REDIS_URL=REDIS_URL, CACHE_KEY_PREFIX=prefix, LOG_LEVEL="WARNING")
    from app import create_app
    from extensions import db
    from services import reference_data, users

    app = create_app({"RABBITMQ_URL": ""})
    with app.app_context():
        db.create_all()
        reference_data.seed()
        users.create_user(STAFF_EMAIL, STAFF_PASSWORD, "Bench Staff", role="staff")
        db.session.commit()
    return app


# ---------------------------------------------------------------- 1. the consumer path


def make_commands(app: Flask, label: str, count: int) -> list[Any]:
    """``count`` pending commands and their outbox events, as the HTTP door leaves them,
    on 20 skus that exist with qty 0; returns them as deliveries (the CloudEvent bytes
    the relay would publish)."""
    from extensions import db
    from messaging.envelope import body_text
    from messaging.processing import Delivery
    from models.messaging import OutboxMessage
    from models.stock import StockCommand, StockLevel
    from services.events import record_event
    from services.stock import _command_event_data

    deliveries = []
    with app.app_context():
        # The skus exist already (steady state): every variant takes the same path.
        for n in range(SKUS):
            db.session.add(StockLevel(warehouse_id="main", sku=f"{label}-SKU-{n}", qty=0))
        event_ids: list[str] = []
        for n in range(count):
            # Per sku: +2, -1, +2, -1 ... never below zero in this order.
            action, qty = ("increase", 2) if (n // SKUS) % 2 == 0 else ("decrease", 1)
            command = StockCommand(
                id=f"{label}-{n}",
                action=action,
                sku=f"{label}-SKU-{n % SKUS}",
                qty=qty,
                warehouse_id="main",
                status="pending",
                issued_by=None,
            )
            db.session.add(command)
            event_ids.append(record_event(f"stock.command.{action}", command.id, _command_event_data(command)))
        db.session.flush()
        just_recorded = db.select(OutboxMessage).where(OutboxMessage.id.in_(event_ids))
        recorded = {row.id: row for row in db.session.scalars(just_recorded)}
        for row in (recorded[event_id] for event_id in event_ids):
            deliveries.append(
                Delivery(
                    queue="carhub.stock",
                    routing_key=row.type,
                    body=body_text(row).encode(),
                    message_id=row.id,
                )
            )
        # Mark them relayed so nothing else would pick them up.
        db.session.query(OutboxMessage).update({"published_at": db.func.now()})
        db.session.commit()
    return deliveries


def run_consumer(app: Flask, deliveries: list[Any], batch: int) -> float:
    from consumer import PERMANENT, handle
    from messaging.processing import Processor

    processor = Processor(handle, PERMANENT)
    with app.app_context():
        started = time.perf_counter()
        for start in range(0, len(deliveries), batch):
            outcomes = processor.run(deliveries[start : start + batch])
            bad = [outcome for _, outcome in outcomes if outcome.kind != "done"]
            if bad:
                raise RuntimeError(f"consumer did not apply everything: {bad[:3]}")
        return time.perf_counter() - started


def _psycopg_params(sql: str) -> str:
    """``:name`` (SQLAlchemy text) as ``%(name)s`` (psycopg)."""
    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql)


BARE_SQL = {
    "inbox": "INSERT INTO inbox (consumer, message_id, type, processed_at) VALUES (%s, %s, %s, now())",
    "outbox": (
        "INSERT INTO outbox (id, type, source, subject, data, correlation_id, created_at, attempts) "
        "VALUES (%s, 'stock.changed', 'carhub/stock', %s, %s, NULL, now(), 0)"
    ),
}


def run_bare(database_url: str, deliveries: list[Any], batch: int | None) -> float:
    """The statements the consumer path issues (the claim-and-apply statement is taken
    from services/stock.py), hand-written over raw psycopg in one loop.

    ``batch=None``: one transaction per command (inbox row, claim-and-apply, outbox
    row, COMMIT; the outbox trigger NOTIFYs). Otherwise the consumer's batch shape:
    claim-and-apply per command, then the batch's inbox and outbox rows as multi-row INSERTs, one commit."""
    import psycopg
    from psycopg.types.json import Jsonb

    from services.stock import CLAIM_AND_APPLY

    claim_and_apply = CLAIM_AND_APPLY  # psycopg placeholders already
    plain = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain) as conn:
        messages = [(d.message_id, d.routing_key, json.loads(d.body)) for d in deliveries]
        started = time.perf_counter()
        cursor = conn.cursor()
        inbox_rows: list[tuple[str, str, str]] = []
        outbox_rows: list[tuple[str, str, Any]] = []
        for index, (message_id, routing_key, envelope) in enumerate(messages):
            data = envelope["data"]
            inbox_rows.append(("carhub.stock", message_id, routing_key))
            if not batch:
                cursor.execute(BARE_SQL["inbox"], inbox_rows.pop())
            params = {
                "command_id": data["command_id"],
                "message_id": message_id,
                "source": "carhub/stock",
                "ledger_id": str(uuid.uuid4()),
                "now": datetime.now(UTC),
            }
            row = cursor.execute(claim_and_apply, params).fetchone()
            if row is None or row[-1] is None:
                raise RuntimeError("the bare loop would have taken the slow path")
            action, sku, qty, warehouse_id, _issued_by, _actor, qty_after = row
            delta = qty if action == "increase" else -qty
            change = {"warehouse_id": warehouse_id, "sku": sku, "qty": qty_after, "delta": delta, "reason": action}
            outbox_rows.append((str(uuid.uuid4()), sku, Jsonb(change)))
            if not batch:
                cursor.execute(BARE_SQL["outbox"], outbox_rows.pop())
            if not batch or (index + 1) % batch == 0 or index + 1 == len(messages):
                if inbox_rows:
                    cursor.executemany(BARE_SQL["inbox"], inbox_rows)
                    cursor.executemany(BARE_SQL["outbox"], outbox_rows)
                    inbox_rows.clear()
                    outbox_rows.clear()
                conn.commit()  # the outbox trigger rings the relay, as for the consumer
        return time.perf_counter() - started


def check_applied(app: Flask, label: str, count: int) -> None:
    """Every variant must have applied every command: same final quantities."""
    from sqlalchemy import func, select

    from extensions import db
    from models.stock import StockCommand, StockLevel

    with app.app_context():
        applied = db.session.scalar(
            select(func.count()).where(StockCommand.id.like(f"{label}-%"), StockCommand.status == "applied")
        )
        total = db.session.scalar(select(func.sum(StockLevel.qty)).where(StockLevel.sku.like(f"{label}-SKU-%")))
        db.session.rollback()
    expected = sum(2 if (n // SKUS) % 2 == 0 else -1 for n in range(count))
    if applied != count or total != expected:
        raise RuntimeError(f"{label}: applied {applied}/{count}, total {total} (expected {expected})")


def consumer_bench(app: Flask, database_url: str, args: argparse.Namespace) -> None:
    variants = (
        ("consumer batch=100", lambda d: run_consumer(app, d, 100)),
        ("bare per-command", lambda d: run_bare(database_url, d, None)),
        ("bare batch=100", lambda d: run_bare(database_url, d, 100)),
        ("consumer batch=1", lambda d: run_consumer(app, d, 1)),
    )
    shape = f"{args.commands} commands per variant, {args.rounds} interleaved rounds, cores {os.cpu_count()}"
    print(f"bench.stock consumer path: {shape}")
    rates: dict[str, list[float]] = {label: [] for label, _ in variants}
    cpu: dict[str, list[float]] = {label: [] for label, _ in variants}
    for round_ in range(args.rounds):
        line = []
        for label, run in variants:
            tag = f"r{round_}{label.replace(' ', '').replace('=', '')}"
            deliveries = make_commands(app, tag, args.commands)
            cpu_before = time.process_time()
            seconds = run(deliveries)
            cpu[label].append(1000 * (time.process_time() - cpu_before) / args.commands)
            check_applied(app, tag, args.commands)
            rates[label].append(args.commands / seconds)
            line.append(f"{label} {args.commands / seconds:6.0f}/s")
        print(f"  round {round_ + 1}: " + "  ".join(line) + f"  (load {os.getloadavg()[0]:.1f})")
    print()
    for label in rates:
        print(
            f"  {label:<20} {median(rates[label]):8.0f} commands/s  "
            f"{median(cpu[label]):5.2f} ms CPU/command in this process (medians)"
        )

    def share(label: str, baseline: str) -> float:
        """Median over rounds of the ratio within each round (same minute, same load)."""
        return median(a / b for a, b in zip(rates[label], rates[baseline], strict=True))

    goal = share("consumer batch=100", "bare per-command")
    verdict = "met" if goal >= CONSUMER_GOAL else "MISSED"
    print(f"  consumer batch=100 / bare per-command: {goal:.2f}x  (goal >= {CONSUMER_GOAL}x: {verdict})")
    same_shape = share("consumer batch=100", "bare batch=100")
    print(f"  consumer batch=100 / bare batch=100:   {same_shape:.2f}x  (Python's cost, same transaction shape)")
    print(f"  consumer batch=1   / bare per-command: {share('consumer batch=1', 'bare per-command'):.2f}x")
    print()


def median(values: Any) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


# ---------------------------------------------------------------- 2. the cached read


def read_bench(database_url: str, prefix: str, args: argparse.Namespace) -> None:
    from bench.api import login, request

    settings = GunicornSettings(workers=args.workers)
    common = {
        "DATABASE_URL": database_url,
        "CACHE_KEY_PREFIX": prefix,
        "RABBITMQ_URL": None,
        "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
        "CARHUB_ADMIN_EMAIL": None,
        "CARHUB_ADMIN_PASSWORD": None,
        "AUTH_RATE_LIMIT": "1000 per second",
        "LOG_LEVEL": "WARNING",
    }
    labels = ("bare", "stock cached", "stock uncached")
    results: list[LoadResult] = []
    print(f"bench.stock read: {settings.describe()}, {args.connections} connections, {args.duration:g}s per phase")
    with ExitStack() as stack:
        bare = stack.enter_context(serve("bench.stock:bare_app()", settings))
        cached = stack.enter_context(serve("app:create_app()", settings, env=common))
        uncached = stack.enter_context(serve('app:create_app({"CACHE_TYPE": "NullCache"})', settings, env=common))
        auth = {"Authorization": f"Bearer {login(cached)}"}
        path = "/api/v1/warehouses/main/products/SKU-0"
        status, body = request(
            cached, "POST", "/api/v1/stock/commands", {"action": "increase", "sku": "SKU-0", "qty": 1234}, headers=auth
        )
        if status != 202:
            raise RuntimeError(f"POST /stock/commands answered {status}: {body}")
        apply_pending(database_url)
        for server in (cached, uncached):
            status, body = request(server, "GET", path, headers=auth)
            if status != 200 or body.get("qty") != 1234:
                raise RuntimeError(f"GET {path} answered {status}: {body}")
        options = {"duration": args.duration, "warmup": args.warmup, "connections": args.connections}
        for round_ in range(args.rounds):
            print(f"  round {round_ + 1}/{args.rounds}")
            for label, server, target, headers in (
                ("bare", bare, "/level", {}),
                ("stock cached", cached, path, auth),
                ("stock uncached", uncached, path, auth),
            ):
                result = server.load(target, headers=headers, label=label, **options)
                results.append(result)
                print(
                    f"    {label:<15} {result.rps:8.1f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
                )
    print()
    print(format_table(results, baseline="bare"))
    rounds = [results[i : i + 3] for i in range(0, len(results), 3)]
    for index, label in enumerate(labels[1:], start=1):
        share = median(ratio(round_[index], round_[0]) for round_ in rounds)
        verdict = f" (goal >= {READ_GOAL}x: {'met' if share >= READ_GOAL else 'MISSED'})" if index == 1 else ""
        print(f"  {label} / bare: {share:.2f}x (median of {len(rounds)} rounds){verdict}")


def apply_pending(database_url: str) -> None:
    """Apply the outbox in-process (no worker in this benchmark) so the read has stock."""
    from extensions import db
    from tests.messaging_helpers import drain_outbox

    app = sys.modules["app"].create_app({"RABBITMQ_URL": ""})
    with app.app_context():
        drain_outbox()
        db.session.remove()


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench.stock took {time.monotonic() - started:.0f}s")
    sys.exit(code)
