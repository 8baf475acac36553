"""GET /api/v1/cars/{id}, cached and uncached, against a bare Flask endpoint.

Run: ``.venv/bin/python -m bench.api`` (PostgreSQL and Redis of this machine; about two
minutes with the defaults: 3 rounds x 3 targets x (2 s warm-up + 10 s)). It makes a
database of its own (``carhub_bench_<pid>``) and a Redis key prefix of its own, and
drops both at the end. Three gunicorns run with the SAME
settings: the bare app (``bench/bare_app.py``), carhub as deployed (Redis cache), and
carhub with ``CACHE_TYPE=NullCache`` (every read goes to PostgreSQL). A staff user
creates one car; then each target is warmed up and loaded for ``--duration`` seconds
in turn, in the same run, by the same load generator, in ``--rounds`` interleaved
rounds (bare, cached, uncached, bare, ...), so a burst of load from elsewhere on the
machine hits one round of every target rather than all of one; medians are reported.
It prints requests/s, p50, p99, server CPU per request, the ratio of each to the bare
endpoint of its round and whether the goal (cached >= 0.6x bare) held.

Why a ratio: absolute numbers on a shared 2-core machine say little; the bare endpoint
measured in the same minute is the ceiling a Flask app under these gunicorn settings
can reach here, so the ratio is what carhub's own work costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.harness import ROOT, GunicornSettings, LoadResult, Server, available_tool, format_table, ratio, serve

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
GOAL = 0.6
STAFF_EMAIL = "bench-staff@carhub.example"
STAFF_PASSWORD = "bench-staff-password"  # a throwaway user in a throwaway database
CAR = {
    "vin": "WVWZZZ1JZXW000001",
    "make": "Volkswagen",
    "model": "Golf",
    "year": 2019,
    "license_plate": "B-CH 1234",
    "color": "blue",
    "mileage_km": 42000,
    "price": "15990.00",
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tag = f"carhub_bench_{os.getpid()}"
    settings = GunicornSettings(workers=args.workers, threads=args.threads, access_log=args.access_log)
    print(f"bench.api: {settings.describe()}, load by {args.tool or available_tool()}, {args.connections} connections,")
    phases = f"{args.duration:g}s per phase after {args.warmup:g}s warm-up, {args.rounds} round(s)"
    print(f"  {phases}; cores: {os.cpu_count()}")

    database_url = create_database(tag)
    prefix = f"{tag}:"
    try:
        prepare_schema(database_url, prefix)
        results = run(args, settings, database_url, prefix)
    finally:
        drop_database(tag)
        forget_redis_keys(prefix)

    print()
    print(format_table(results, baseline="bare"))
    summary = summarise(results)
    print()
    rounds = f"median of {args.rounds} round(s)" if args.rounds > 1 else "one round"
    for label, figures in summary["medians"].items():
        share = f"{summary['ratios'][label]:.2f}x bare" if label in summary["ratios"] else "baseline"
        print(
            f"{label:<14} {figures['rps']:8.1f} req/s  p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms"
            f"  server CPU {figures['server_cpu_ms_per_request']:.2f} ms/req  {share}  ({rounds})"
        )
    verdict = "met" if summary["ratios"].get("cars cached", 0) >= GOAL else "MISSED"
    print(f"goal cached >= {GOAL}x bare: {verdict}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars_of(args), **summary}, indent=2, default=str))
        print(f"results written to {args.json}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each phase (default 2)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for every server (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker; >1 means gthread (default 1)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of bare/cached/uncached; medians (default 3)"
    )
    parser.add_argument("--tool", choices=("wrk", "python"), help="load generator (default: wrk if installed)")
    parser.add_argument("--access-log", action="store_true", help="keep gunicorn's access log on (off by default)")
    parser.add_argument("--json", type=Path, help="also write the results here (e.g. bench/results/api.json)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measured phases, load the cached read once more with py-spy on one worker and print "
        "where its time goes (needs py-spy: .venv/bin/pip install py-spy; not counted in the results)",
    )
    return parser.parse_args(argv)


def vars_of(args: argparse.Namespace) -> dict[str, Any]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


# ---------------------------------------------------------------- the run


def run(args: argparse.Namespace, settings: GunicornSettings, database_url: str, prefix: str) -> list[LoadResult]:
    """Start the three servers side by side, make one car, load each target in turn."""
    metrics_dir = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    common = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CACHE_KEY_PREFIX": prefix,
        "RABBITMQ_URL": None,  # the web process never publishes; /health then skips the broker
        "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
        "CARHUB_ADMIN_EMAIL": None,
        "CARHUB_ADMIN_PASSWORD": None,
        "AUTH_RATE_LIMIT": "1000 per second",
    }
    results: list[LoadResult] = []
    with ExitStack() as stack:
        bare = stack.enter_context(serve("bench.bare_app:create_app()", settings))
        cached = stack.enter_context(
            serve("app:create_app()", settings, env={**common, "PROMETHEUS_MULTIPROC_DIR": mkdir(metrics_dir / "c")})
        )
        uncached = stack.enter_context(
            serve(
                'app:create_app({"CACHE_TYPE": "NullCache"})',
                settings,
                env={**common, "PROMETHEUS_MULTIPROC_DIR": mkdir(metrics_dir / "u")},
            )
        )
        token = login(cached)
        auth = {"Authorization": f"Bearer {token}"}
        car_id = create_car(cached, auth)
        path = f"/api/v1/cars/{car_id}"
        for server in (cached, uncached):
            status, body = request(server, "GET", path, headers=auth)
            if status != 200 or body.get("id") != car_id:
                raise RuntimeError(f"GET {path} on {server.app_spec} answered {status}: {body}")
        options = {
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
            "tool": args.tool,
        }
        for round_ in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_ + 1}/{args.rounds}")
            for label, server, target, headers in (
                ("bare", bare, "/car", {}),
                ("cars cached", cached, path, auth),
                ("cars uncached", uncached, path, auth),
            ):
                result = server.load(target, headers=headers, label=label, **options)
                results.append(result)
                print(
                    f"  {label:<14} {result.rps:8.1f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
                )
        report_cache_use(cached, uncached, auth)
        if args.profile:
            profile(cached, path, auth, options)
    return results


def report_cache_use(cached: Server, uncached: Server, auth: dict[str, str]) -> None:
    """Show that the cached server hit Redis and the uncached one never did."""
    for name, server in (("cached", cached), ("uncached", uncached)):
        status, body = request(server, "GET", "/stats", headers=auth)
        if status == 200:
            print(f"  {name} server cache lookups: {body.get('cache')}")


# Where a sample of the cached read is spent: the deepest frame of a stack that matches
# one of these names decides (so PyJWT under verify_jwt_in_request counts as JWT).
PROFILE_GROUPS = (
    ("SyncWorker.handle", "gunicorn: parse request, write and close socket"),
    ("ThreadWorker.handle", "gunicorn: parse request, write and close socket"),
    ("Flask.wsgi_app", "Flask/Werkzeug: context, routing, hooks, response"),
    ("prometheus", "metrics (prometheus_client, multiprocess files)"),
    ("_note_endpoint", "metrics (prometheus_client, multiprocess files)"),
    ("assign_request_id", "request id hooks"),
    ("expose_request_id", "request id hooks"),
    ("_verified_claims", "bearer token (verified-token lookup; a miss verifies it)"),
    ("verify_jwt_in_request", "JWT verification (flask-jwt-extended + PyJWT)"),
    ("ResponseMixin.response", "flask-smorest response wrapper"),
    ("get_car (services/cars.py:", "services.cars.get_car"),
    ("Cache.get", "cache GET (Redis round trip + unpickle)"),
    ("CACHE_LOOKUPS", "cache hit counter"),
    ("_one (blueprints/cars.py:", "response body: CarSchema dump + ETag"),
)


def profile(server: Server, path: str, auth: dict[str, str], options: dict[str, Any]) -> None:
    """Sample one worker with py-spy while the cached read is loaded; print time by group."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not py_spy:
        print("  --profile: py-spy not found (.venv/bin/pip install py-spy); skipped")
        return
    worker = server.pids()[1]
    seconds = max(2, int(options["duration"]))
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as handle:
        raw = Path(handle.name)
    spy = subprocess.Popen(
        [py_spy, "record", "-p", str(worker), "-d", str(seconds), "-r", "200", "-f", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # py-spy attaches
    server.load(path, headers=auth, label="profiled", **{**options, "warmup": 0, "duration": seconds})
    spy.wait(timeout=60)
    groups: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        group = "outside a request (accept, idle)"
        for frame in stack.split(";"):
            for needle, name in PROFILE_GROUPS:
                if needle in frame:
                    group = name
        groups[group] = groups.get(group, 0) + int(count)
        total += int(count)
    raw.unlink(missing_ok=True)
    if not total:
        print("  --profile: py-spy recorded nothing (ptrace not allowed?)")
        return
    in_request = total - groups.get("outside a request (accept, idle)", 0)
    print(f"\nprofile of one worker under the cached read ({total} samples, py-spy, wall time of non-idle samples):")
    for name, count in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print(f"  ({in_request} samples inside request handling)")


def summarise(results: list[LoadResult]) -> dict[str, Any]:
    """Per target, medians over the rounds; each ratio is to the bare endpoint of its own round."""
    labels = ("bare", "cars cached", "cars uncached")
    rounds = [results[i : i + len(labels)] for i in range(0, len(results), len(labels))]
    rounds = [round_ for round_ in rounds if len(round_) == len(labels)]
    ratios: dict[str, float] = {}
    medians: dict[str, dict[str, float]] = {}
    for index, label in enumerate(labels):
        if not rounds:
            break
        medians[label] = {
            "rps": median(round_[index].rps for round_ in rounds),
            "p50_ms": median(round_[index].p50_ms for round_ in rounds),
            "p99_ms": median(round_[index].p99_ms for round_ in rounds),
            "server_cpu_ms_per_request": median(round_[index].server_cpu_ms_per_request or 0 for round_ in rounds),
        }
        if index:
            ratios[label] = median(ratio(round_[index], round_[0]) for round_ in rounds)
    return {"ratios": ratios, "medians": medians, "results": [result.as_dict() for result in results]}


def median(values: Any) -> float:
    ordered = list(values)
    return statistics.median(ordered) if ordered else 0.0


def mkdir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


# ---------------------------------------------------------------- HTTP helpers


def request(
    server: Server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url(path), data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def login(server: Server) -> str:
    status, body = request(server, "POST", "/api/v1/auth/login", {"email": STAFF_EMAIL, "password": STAFF_PASSWORD})
    if status != 200:
        raise RuntimeError(f"login failed with {status}: {body}")
    return str(body["access_token"])


def create_car(server: Server, auth: dict[str, str]) -> str:
    status, body = request(server, "POST", "/api/v1/cars", CAR, headers=auth)
    if status != 201:
        raise RuntimeError(f"creating the car failed with {status}: {body}")
    return str(body["id"])


# ---------------------------------------------------------------- database and Redis


def create_database(name: str) -> str:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        sys.exit(f"the benchmarks need PostgreSQL at {PG_ADMIN_URL} (BENCH_POSTGRES_URL): {exc}")
    return urlunsplit(urlsplit(PG_ADMIN_URL)._replace(path=f"/{name}"))


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_schema(database_url: str, prefix: str) -> None:
    """Tables from the models (as the tests do) and the staff user who makes the car."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        sys.exit(f"bench.api needs Redis at {REDIS_URL} (BENCH_REDIS_URL): {exc}")
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=REDIS_URL, CACHE_KEY_PREFIX=prefix)
    sys.path.insert(0, str(ROOT))
    from app import create_app
    from extensions import db
    from services import users

    app = create_app({"RABBITMQ_URL": ""})
    with app.app_context():
        db.create_all()
        users.create_user(STAFF_EMAIL, STAFF_PASSWORD, "Bench Staff", role="staff")
        db.session.commit()
        db.engine.dispose()


def forget_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench.api took {time.monotonic() - started:.0f}s")
    sys.exit(code)
