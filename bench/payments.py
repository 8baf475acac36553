"""Payments end to end: POST /api/v1/payments → bonus accrual visible in PostgreSQL.

Run: ``.venv/bin/python -m bench.payments`` (PostgreSQL, RabbitMQ and Redis of this
machine; 40 to 70 seconds). It makes a database, a RabbitMQ vhost and a Redis
key prefix of its own and removes them at the end. One gunicorn serves carhub, one
``consumer.py --single`` relays the outbox to RabbitMQ and consumes (bonus and
notification queues), exactly as deployed.

Phases, in one run:
1. Floor: the same machine's PostgreSQL commit and RabbitMQ round trip (publish with
   confirms to a quorum queue, consume, ack). A payment reaches its accrual through at
   least: the payment commit, the relay's publish + mark-sent commit, the consumer's
   delivery and its commit, so ``2 commits + 1 broker round trip`` is the floor the
   accrual latency is compared with.
2. Steady: ``--rate`` payments/s for ``--duration`` s, open loop (sent on a fixed
   schedule, not when the previous one answered). For every payment: the POST latency,
   and the time from its 201 to its accrual row becoming visible to another connection
   (a watcher polls every ``--poll-ms``): p50 and p99.
3. Throughput: ``--burst`` payments from ``--clients`` concurrent clients as fast as the
   server takes them; payments/s end to end = burst / (first POST → last accrual
   visible), compared with the rate the POSTs alone were answered at.

Every accrual is checked: exactly one per payment and 1% of its amount.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.api import create_database, drop_database
from bench.harness import ROOT, GunicornSettings, Server, serve

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PASSWORD = "bench-customer-password"  # throwaway users in a throwaway database
PRICE = "4500.00"
BONUS = Decimal("45.00")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import logging

    logging.getLogger("pika").setLevel(logging.WARNING)
    tag = f"carhub_bench_pay_{os.getpid()}"
    settings = GunicornSettings(workers=args.workers, threads=args.threads)
    print(f"bench.payments: {settings.describe()}, 1 worker process (consumer.py --single), cores: {os.cpu_count()}")
    print(
        f"  steady {args.rate:g}/s for {args.duration:g}s, burst {args.burst} from {args.clients} clients, "
        f"watcher polls every {args.poll_ms:g} ms"
    )
    database_url = create_database(tag)
    vhost = create_vhost(tag)
    prefix = f"{tag}:"
    try:
        return run(args, settings, database_url, vhost_url(vhost), prefix)
    finally:
        drop_database(tag)
        drop_vhost(vhost)
        forget_redis_keys(prefix)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.payments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10.0, help="steady payments per second (default 10)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady load (default 20)")
    parser.add_argument("--burst", type=int, default=300, help="payments in the throughput phase (default 300)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the burst (default 8)")
    parser.add_argument("--customers", type=int, default=8, help="customers the payments spread over (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="watcher poll interval (default 5 ms)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the run


@dataclass
class Sent:
    payment_id: str
    sent: float  # monotonic, just before the POST
    answered: float  # monotonic, the 201 read


@dataclass
class Watcher:
    """Polls the ledger from its own connection: an accrual counts once another session sees it."""

    database_url: str
    interval: float
    seen: dict[str, float] = field(default_factory=dict)
    amounts: dict[str, Decimal] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import psycopg

        with psycopg.connect(plain_url(self.database_url), autocommit=True) as conn:
            last_seen_at = None
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT payment_id, amount, created_at FROM bonus_entries WHERE kind = 'accrual' "
                    "AND (%s::timestamptz IS NULL OR created_at > %s::timestamptz - interval '2 s')",
                    (last_seen_at, last_seen_at),
                ).fetchall()
                now = time.monotonic()
                for payment_id, amount, created_at in rows:
                    if payment_id not in self.seen:
                        self.seen[payment_id] = now
                        self.amounts[payment_id] = amount
                    last_seen_at = max(last_seen_at or created_at, created_at)
                time.sleep(self.interval)

    def wait_for(self, payment_ids: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(payment_id in self.seen for payment_id in payment_ids):
                return True
            time.sleep(0.05)
        return False


def run(args: argparse.Namespace, settings: GunicornSettings, database_url: str, broker_url: str, prefix: str) -> int:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "RABBITMQ_URL": broker_url,
        "CACHE_KEY_PREFIX": prefix,
        "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
        "CARHUB_ADMIN_EMAIL": None,
        "CARHUB_ADMIN_PASSWORD": None,
        "AUTH_RATE_LIMIT": "1000 per second",
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": None,
    }
    steady_count = int(args.rate * args.duration)
    customers = prepare(database_url, broker_url, prefix, args.customers, steady_count + args.burst + 20)
    floor = measure_floor(database_url, broker_url)
    print(
        f"floor: PostgreSQL commit p50 {floor['commit_p50_ms']:.2f} ms, RabbitMQ confirm+deliver round trip "
        f"p50 {floor['broker_p50_ms']:.2f} ms -> floor {floor['floor_ms']:.2f} ms"
    )
    with serve("app:create_app()", settings, env=env) as server, worker(env) as _:
        tokens = {customer: login(server, customer) for customer in customers}
        orders = [(tokens[customer], order_id) for customer, ids in customers.items() for order_id in ids]
        orders = interleave(orders, len(customers))
        watcher = Watcher(database_url, args.poll_ms / 1000)
        threading.Thread(target=watcher.run, daemon=True).start()

        warm = [pay(server, *orders.pop()) for _ in range(10)]
        if not watcher.wait_for([s.payment_id for s in warm], 60):
            raise RuntimeError("warm-up payments never accrued: is the worker running?")

        steady = steady_phase(server, [orders.pop() for _ in range(steady_count)], args.rate)
        if not watcher.wait_for([s.payment_id for s in steady], 120):
            raise RuntimeError("not every steady payment accrued within 120 s")
        burst, burst_posts_s = burst_phase(server, [orders.pop() for _ in range(args.burst)], args.clients)
        if not watcher.wait_for([s.payment_id for s in burst], 180):
            raise RuntimeError("not every burst payment accrued within 180 s")
        watcher.stop.set()

    everything = warm + steady + burst
    wrong = [s.payment_id for s in everything if watcher.amounts.get(s.payment_id) != BONUS]
    duplicates = count_duplicate_accruals(database_url)
    result = report(args, floor, steady, burst, burst_posts_s, watcher, wrong, duplicates)
    result["stages"] = {
        "steady": stages(database_url, [s.payment_id for s in steady], "steady"),
        "burst": stages(database_url, [s.payment_id for s in burst], "burst"),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"results written to {args.json}")
    return 0 if not wrong and not duplicates else 1


def steady_phase(server: Server, orders: list[tuple[str, str]], rate: float) -> list[Sent]:
    """Open loop: payment i is sent at start + i / rate, by whichever client is free."""
    start = time.monotonic() + 0.2
    late: list[float] = []

    def one(index: int, token: str, order_id: str) -> Sent:
        due = start + index / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            late.append(-pause)
        return pay(server, token, order_id)

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(one, index, token, order_id) for index, (token, order_id) in enumerate(orders)]
        sent = [future.result() for future in futures]
    if late:
        print(f"  steady: {len(late)} of {len(orders)} sends were late (max {max(late) * 1000:.0f} ms)")
    return sent


def burst_phase(server: Server, orders: list[tuple[str, str]], clients: int) -> tuple[list[Sent], float]:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        sent = list(pool.map(lambda pair: pay(server, *pair), orders))
    return sent, len(sent) / (time.monotonic() - started)


def report(
    args: argparse.Namespace,
    floor: dict[str, float],
    steady: list[Sent],
    burst: list[Sent],
    burst_posts_s: float,
    watcher: Watcher,
    wrong: list[str],
    duplicates: int,
) -> dict[str, Any]:
    post_ms = sorted((s.answered - s.sent) * 1000 for s in steady)
    accrual_ms = sorted((watcher.seen[s.payment_id] - s.answered) * 1000 for s in steady)
    end_to_end_ms = sorted((watcher.seen[s.payment_id] - s.sent) * 1000 for s in steady)
    steady_span = max(s.sent for s in steady) - min(s.sent for s in steady)
    achieved_rate = (len(steady) - 1) / steady_span if steady_span > 0 else 0.0
    burst_first = min(s.sent for s in burst)
    burst_last_accrual = max(watcher.seen[s.payment_id] for s in burst)
    burst_e2e_s = len(burst) / (burst_last_accrual - burst_first)
    burst_lag_ms = sorted((watcher.seen[s.payment_id] - s.answered) * 1000 for s in burst)
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "floor": floor,
        "steady": {
            "payments": len(steady),
            "rate_asked": args.rate,
            "rate_sent": round(achieved_rate, 2),
            "post_p50_ms": pct(post_ms, 50),
            "post_p99_ms": pct(post_ms, 99),
            "payment_to_accrual_p50_ms": pct(accrual_ms, 50),
            "payment_to_accrual_p99_ms": pct(accrual_ms, 99),
            "post_sent_to_accrual_p50_ms": pct(end_to_end_ms, 50),
            "post_sent_to_accrual_p99_ms": pct(end_to_end_ms, 99),
            "accrual_p50_over_floor": round(pct(accrual_ms, 50) / floor["floor_ms"], 2),
        },
        "burst": {
            "payments": len(burst),
            "clients": args.clients,
            "posts_per_s": round(burst_posts_s, 1),
            "end_to_end_payments_per_s": round(burst_e2e_s, 1),
            "end_to_end_over_posts": round(burst_e2e_s / burst_posts_s, 2),
            "payment_to_accrual_p50_ms": pct(burst_lag_ms, 50),
            "payment_to_accrual_p99_ms": pct(burst_lag_ms, 99),
        },
        "checks": {"wrong_amounts": len(wrong), "duplicate_accruals": duplicates},
    }
    s, b = result["steady"], result["burst"]
    print()
    print(f"steady {s['payments']} payments at {s['rate_sent']}/s (asked {args.rate:g}/s):")
    print(f"  POST /payments           p50 {s['post_p50_ms']:8.1f} ms   p99 {s['post_p99_ms']:8.1f} ms")
    print(
        f"  201 -> accrual visible   p50 {s['payment_to_accrual_p50_ms']:8.1f} ms   "
        f"p99 {s['payment_to_accrual_p99_ms']:8.1f} ms   (p50 = {s['accrual_p50_over_floor']}x the floor)"
    )
    print(
        f"  POST sent -> accrual     p50 {s['post_sent_to_accrual_p50_ms']:8.1f} ms   "
        f"p99 {s['post_sent_to_accrual_p99_ms']:8.1f} ms"
    )
    print(f"burst {b['payments']} payments from {b['clients']} clients:")
    print(f"  POSTs answered           {b['posts_per_s']:8.1f} /s")
    print(
        f"  end to end (POST -> bonus visible) {b['end_to_end_payments_per_s']:8.1f} payments/s "
        f"= {b['end_to_end_over_posts']}x the POST rate"
    )
    print(
        f"  201 -> accrual visible   p50 {b['payment_to_accrual_p50_ms']:8.1f} ms   "
        f"p99 {b['payment_to_accrual_p99_ms']:8.1f} ms"
    )
    checks = result["checks"]
    verdict = "ok" if not wrong and not duplicates else "FAILED"
    print(
        f"checks: every payment accrued {BONUS} exactly once: {verdict} "
        f"(wrong amounts {checks['wrong_amounts']}, duplicates {checks['duplicate_accruals']})"
    )
    return result


def stages(database_url: str, payment_ids: list[str], label: str) -> dict[str, float]:
    """Where the time goes, from the rows' own timestamps (one clock: this machine's),
    each measured from the payment's commit (payments.created_at):

    - relay: the outbox row taken by the relay (``published_at``: it marks the rows as it
      takes them, and commits the marks once RabbitMQ has confirmed the publish);
    - applied: the bonus consumer's inbox row (its transaction writing the accrual).
    """
    import psycopg

    with psycopg.connect(plain_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM o.published_at - p.created_at) * 1000,"
            " extract(epoch FROM i.processed_at - p.created_at) * 1000"
            " FROM payments p"
            " JOIN outbox o ON o.type = 'payment.succeeded' AND o.subject = p.id"
            " JOIN inbox i ON i.consumer = 'carhub.bonus' AND i.message_id = o.id"
            " WHERE p.id = ANY(%s)",
            (payment_ids,),
        ).fetchall()
    relay = sorted(float(row[0]) for row in rows)
    applied = sorted(float(row[1]) for row in rows)
    result = {
        "marked_sent_p50_ms": pct(relay, 50),
        "marked_sent_p99_ms": pct(relay, 99),
        "applied_p50_ms": pct(applied, 50),
        "applied_p99_ms": pct(applied, 99),
    }
    print(
        f"  {label}, from the payment's commit: bonus consumer applied it p50 {result['applied_p50_ms']:.1f} ms "
        f"p99 {result['applied_p99_ms']:.1f} ms; relay took it p50 {result['marked_sent_p50_ms']:.1f} ms "
        f"p99 {result['marked_sent_p99_ms']:.1f} ms"
    )
    return result


def pct(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[index], 2)


def interleave(orders: list[tuple[str, str]], ways: int) -> list[tuple[str, str]]:
    """Spread consecutive payments over the customers (``pop`` takes from the end)."""
    by_token: dict[str, list[str]] = {}
    for token, order_id in orders:
        by_token.setdefault(token, []).append(order_id)
    mixed: list[tuple[str, str]] = []
    while any(by_token.values()):
        for token, ids in by_token.items():
            if ids:
                mixed.append((token, ids.pop()))
    return mixed


# ---------------------------------------------------------------- HTTP


def call(server: Server, method: str, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def login(server: Server, email: str) -> str:
    status, body = call(server, "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
    if status != 200:
        raise RuntimeError(f"login of {email} failed with {status}: {body}")
    return str(body["access_token"])


def pay(server: Server, token: str, order_id: str) -> Sent:
    sent = time.monotonic()
    status, body = call(server, "POST", "/api/v1/payments", {"order_id": order_id, "method": "card"}, token)
    answered = time.monotonic()
    if status != 201 or body.get("amount") != PRICE:
        raise RuntimeError(f"payment of {order_id} answered {status}: {body}")
    return Sent(body["id"], sent, answered)


# ---------------------------------------------------------------- the worker


@contextmanager
def worker(env: dict[str, str | None]) -> Iterator[Any]:
    import subprocess
    import tempfile

    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    environment["LOG_LEVEL"] = "INFO"  # the readiness line is INFO
    log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "consumer.py"), "--single"], cwd=ROOT, env=environment, stdout=log, stderr=log
    )
    log.close()
    output = Path(log.name)
    try:
        deadline = time.monotonic() + 60
        while "consuming carhub." not in output.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{output.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()


# ---------------------------------------------------------------- data and the floor


def prepare(database_url: str, broker_url: str, prefix: str, customers: int, orders: int) -> dict[str, list[str]]:
    """Tables, topology, customers with a car each, and unpaid orders of PRICE."""
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=REDIS_URL, CACHE_KEY_PREFIX=prefix, RABBITMQ_URL="")
    sys.path.insert(0, str(ROOT))
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from app import create_app
    from extensions import db
    from messaging import topology
    from models.catalogue import CatalogueItem
    from models.messaging import OutboxMessage
    from services import cars, reference_data, users
    from services import orders as orders_service

    topology.declare_url(broker_url)
    app = create_app({"PASSWORD_HASH_PROFILE": "fast"})
    made: dict[str, list[str]] = {}
    with app.app_context():
        db.create_all()
        reference_data.seed()
        db.session.add(CatalogueItem(code="bench", name="Bench service", price=Decimal(PRICE)))
        db.session.commit()
        when = datetime.now(UTC) + timedelta(days=1)
        for number in range(customers):
            email = f"bench-{number}@carhub.example"
            user = users.create_user(email, PASSWORD, f"Bench {number}")
            cars.create_car(
                {"vin": f"WVWZZZ1JZXW{number:06d}", "make": "VW", "model": "Golf", "year": 2019, "owner_id": user.id}
            )
            made[email] = []
        emails = list(made)
        for index in range(orders):
            email = emails[index % len(emails)]
            user = users.find_by_email(email)
            car_id = db.session.scalar(db.select(cars.Car.id).where(cars.Car.owner_id == user.id))
            order = orders_service.add_order(user.id, car_id, when, "bench", [{"code": "bench", "qty": 1}])
            made[email].append(order.id)
        # The set-up's own events are not what is measured: mark them sent.
        db.session.execute(update(OutboxMessage).values(published_at=datetime.now(UTC)))
        db.session.commit()
        db.engine.dispose()
    print(f"prepared {customers} customers and {orders} orders of {PRICE}")
    return made


def measure_floor(database_url: str, broker_url: str, samples: int = 200) -> dict[str, float]:
    """A small insert + commit on PostgreSQL, and publish(confirm) → deliver on a quorum queue."""
    import pika
    import psycopg

    commits = []
    with psycopg.connect(plain_url(database_url)) as conn:
        conn.execute("CREATE TABLE bench_floor (id serial PRIMARY KEY, body text)")
        conn.commit()
        for _ in range(samples):
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_floor (body) VALUES ('x')")
            conn.commit()
            commits.append((time.perf_counter() - started) * 1000)
        conn.execute("DROP TABLE bench_floor")
        conn.commit()

    trips = []
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = "bench.floor"
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        for _ in range(samples):
            started = time.perf_counter()
            channel.basic_publish("", queue, b"{}", pika.BasicProperties(delivery_mode=2))
            while True:
                method, _, _ = channel.basic_get(queue)
                if method is not None:
                    channel.basic_ack(method.delivery_tag)
                    break
            trips.append((time.perf_counter() - started) * 1000)
        channel.queue_delete(queue)
    finally:
        connection.close()
    commit_p50, broker_p50 = pct(sorted(commits), 50), pct(sorted(trips), 50)
    return {"commit_p50_ms": commit_p50, "broker_p50_ms": broker_p50, "floor_ms": round(2 * commit_p50 + broker_p50, 2)}


def count_duplicate_accruals(database_url: str) -> int:
    import psycopg

    with psycopg.connect(plain_url(database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT payment_id FROM bonus_entries WHERE kind = 'accrual' "
            "GROUP BY payment_id HAVING count(*) > 1) AS twice"
        ).fetchone()
    return int(row[0]) if row else 0


def plain_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def create_vhost(name: str) -> Any:
    """A vhost of our own, the way the tests make theirs."""
    sys.path.insert(0, str(ROOT))
    from tests import backends

    if not backends.reachable(backends.RABBITMQ_URL, 5672):
        sys.exit(f"bench.payments needs RabbitMQ at {backends.RABBITMQ_URL} (TEST_RABBITMQ_URL)")
    original, backends.SESSION_TAG = backends.SESSION_TAG, name.replace("_", "-")
    try:
        return backends.RabbitVhost.create()
    finally:
        backends.SESSION_TAG = original


def vhost_url(vhost: Any) -> str:
    return str(vhost.url)


def drop_vhost(vhost: Any) -> None:
    vhost.drop()


def forget_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench.payments took {time.monotonic() - started:.0f}s")
    sys.exit(code)
