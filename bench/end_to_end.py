"""End to end: POST /api/v1/cars → the owner's notification committed by the consumer.

Run: ``.venv/bin/python -m bench.end_to_end [--rate 200 --duration 10]`` (PostgreSQL,
Redis and RabbitMQ of this machine; a database and vhost of its own; about a minute).

What runs is what ``make run`` runs: gunicorn (2 sync workers, carhub's
gunicorn.conf.py) and ``consumer.py --single`` (relay + consumer). A staff user POSTs
cars owned by a customer at a steady ``--rate`` (open loop: requests leave on a fixed
schedule whatever the answers do, so a slow system cannot slow the load down), from
several keep-alive connections. Per car, latency = the notification's ``created_at``
(written by the consumer in its transaction, a millisecond or two before its commit)
minus the moment the POST left. Beside it, as the baseline of the same run, the POST's
own response time: what the event path adds is the difference.
Goal: effect p50 <= 15 ms, p99 <= 60 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.client import HTTPConnection

from bench.harness import ROOT, GunicornSettings, cpu_seconds_by_command, process_cpu_seconds, serve
from bench.messaging_env import backbone, cores, host_speed

GOAL_P50_MS, GOAL_P99_MS = 15.0, 60.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def login(port: int, email: str, password: str) -> str:
    connection = HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(
        "POST",
        "/api/v1/auth/login",
        json.dumps({"email": email, "password": password}),
        {"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 200, body
    return body["access_token"]


def drive(
    port: int, token: str, owner_id: str, rate: float, duration: float, connections: int, first_vin: int = 0
) -> list[dict]:
    """Open-loop POSTs at ``rate`` per second; returns what each request saw."""
    total = int(rate * duration)
    schedule: queue.Queue[int | None] = queue.Queue()
    results: list[dict] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.5
    wall_start = time.time() + 0.5
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def worker() -> None:
        connection = HTTPConnection("127.0.0.1", port, timeout=30)
        while (n := schedule.get()) is not None:
            due = start + n / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            body = json.dumps(
                {"vin": f"1HGCM{first_vin + n:012d}", "make": "VW", "model": "Golf", "year": 2019, "owner_id": owner_id}
            )
            sent_wall = wall_start + (time.monotonic() - start)
            sent = time.monotonic()
            connection.request("POST", "/api/v1/cars", body, headers)
            response = connection.getresponse()
            payload = json.loads(response.read())
            answered = time.monotonic()
            with lock:
                results.append(
                    {
                        "status": response.status,
                        "car_id": payload.get("id"),
                        "sent_wall": sent_wall,
                        "response_ms": (answered - sent) * 1000,
                        "late_ms": (sent - due) * 1000,
                    }
                )
        connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for n in range(total):
        schedule.put(n)
    for _ in threads:
        schedule.put(None)
    for thread in threads:
        thread.join()
    return results


def cpu_snapshot(web_seconds: float, worker_pid: int) -> dict[str, float]:
    """CPU seconds so far of each part an event passes through, this load generator included."""
    services = cpu_seconds_by_command(("postgres", "beam.smp", "redis-server"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "web": web_seconds,
        "worker": process_cpu_seconds(worker_pid),
        "PostgreSQL": services["postgres"],
        "RabbitMQ": services["beam.smp"],
        "Redis": services["redis-server"],
        "load generator": usage.ru_utime + usage.ru_stime,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker; >1 means gthread (default 1)")
    parser.add_argument("--dump", help="write every request's timings (JSON lines) to this file")
    args = parser.parse_args()
    settings = GunicornSettings(workers=args.workers, threads=args.threads)
    print(
        f"bench.end_to_end: {args.rate:g} POST/s for {args.duration:g}s, {settings.describe()}, "
        f"{args.connections} connections; {cores()}"
    )
    with backbone() as env:
        from extensions import db
        from models.messaging import OutboxMessage
        from models.notifications import Notification
        from services import users

        with env.app.app_context():
            users.create_user("bench-staff@example.com", "long-enough-pw", "Staff", role="staff")
            owner_id = users.create_user("bench-owner@example.com", "long-enough-pw", "Owner").id
        environment = {**env.worker_env(), "PROMETHEUS_MULTIPROC_DIR": None, "AUTH_RATE_LIMIT": "1000 per second"}
        worker_env = {**os.environ, **{k: v for k, v in environment.items() if v is not None}}
        worker_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "consumer.py"), "--single"],
            cwd=ROOT,
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with serve("app:create_app()", settings, env=environment) as server:
                token = login(server.port, "bench-staff@example.com", "long-enough-pw")
                drive(server.port, token, owner_id, 50, 1, 4, first_vin=10**9)  # warm-up, not measured
                time.sleep(1)
                # The load generator must not pause either: a full collection of this
                # process (the app above included) held every sender for ~90 ms.
                gc.freeze()
                cpu_before = cpu_snapshot(server.cpu_seconds(), worker.pid)
                results = drive(server.port, token, owner_id, args.rate, args.duration, args.connections)
                time.sleep(0.5)  # the last events' relay and consumer work
                cpu_used = {
                    part: after - cpu_before[part]
                    for part, after in cpu_snapshot(server.cpu_seconds(), worker.pid).items()
                }
            created = {r["car_id"]: r for r in results if r["status"] == 201}
            deadline = time.monotonic() + 60
            with env.app.app_context():
                while time.monotonic() < deadline:
                    db.session.rollback()
                    rows = db.session.execute(
                        db.select(
                            Notification.reference,
                            Notification.created_at,
                            OutboxMessage.created_at,
                            OutboxMessage.published_at,
                        )
                        .join(OutboxMessage, OutboxMessage.id == Notification.event_id)
                        .where(Notification.reference.in_(list(created)))
                    ).all()
                    if len(rows) >= len(created):
                        break
                    time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(30)
    effect = [
        (at.astimezone(UTC) - datetime.fromtimestamp(created[ref]["sent_wall"], UTC)).total_seconds() * 1000
        for ref, at, _, _ in rows
    ]
    # Where the time goes: row written in the request -> taken by the relay (published_at),
    # and -> applied by the consumer.
    to_relay = [(published - recorded).total_seconds() * 1000 for _, _, recorded, published in rows]
    to_applied = [(at - recorded).total_seconds() * 1000 for _, at, recorded, _ in rows]
    response = [r["response_ms"] for r in results if r["status"] == 201]
    late = [r["late_ms"] for r in results]
    errors = dict(Counter(r["status"] for r in results if r["status"] != 201))
    print(
        f"requests: {len(results)}, created: {len(created)}, errors: {errors}, effects seen: {len(effect)}; "
        f"sender lateness p99 {percentile(late, 0.99):.1f} ms (how far the load fell behind its schedule)"
    )
    print(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    print(
        f"{'POST response (baseline)':34}{percentile(response, 0.5):>10.1f}{percentile(response, 0.99):>10.1f}"
        f"{statistics.fmean(response):>10.1f}"
    )
    print(
        f"{'POST -> notification committed':34}{percentile(effect, 0.5):>10.1f}{percentile(effect, 0.99):>10.1f}"
        f"{statistics.fmean(effect):>10.1f}"
    )
    for label, values in (
        ("  outbox row -> taken by the relay", to_relay),
        ("  outbox row -> notification", to_applied),
    ):
        print(
            f"{label:34}{percentile(values, 0.5):>10.1f}{percentile(values, 0.99):>10.1f}"
            f"{statistics.fmean(values):>10.1f}"
        )
    busy = sum(cpu_used.values()) / (args.duration + 0.5) / (os.cpu_count() or 1)
    print(
        "CPU per event, ms: "
        + ", ".join(f"{part} {1000 * seconds / len(results):.2f}" for part, seconds in cpu_used.items())
        + f"; total {1000 * sum(cpu_used.values()) / len(results):.2f} (the cores {busy:.0%} busy)"
    )
    print(f"after the run: {host_speed()}")
    p50, p99 = percentile(effect, 0.5), percentile(effect, 0.99)
    print(f"event path adds p50 {p50 - percentile(response, 0.5):.1f} ms over the POST itself")
    if args.dump:
        applied = {ref: at for ref, at, _, _ in rows}
        with open(args.dump, "w") as out:
            for r in sorted(results, key=lambda r: r["sent_wall"]):
                at = applied.get(r["car_id"])
                effect_ms = (at.timestamp() - r["sent_wall"]) * 1000 if at else None
                out.write(json.dumps({**r, "effect_ms": effect_ms}) + "\n")
    met = p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS
    print(f"goal: p50 <= {GOAL_P50_MS:g} ms and p99 <= {GOAL_P99_MS:g} ms -> {'MET' if met else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
