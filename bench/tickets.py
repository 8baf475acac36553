"""GET /api/v1/tickets?user_name=... with 1,000,000 tickets: first page vs deep pages vs bare Flask.

Run: ``.venv/bin/python -m bench.tickets`` (PostgreSQL and Redis of this machine; about
three minutes). It makes a database of its own (``carhub_bench_tickets_<pid>``), loads
1,000,000 tickets with ``INSERT ... SELECT generate_series`` (indexes dropped during the
load and rebuilt after, then ``VACUUM ANALYZE`` so index-only scans see an all-visible
heap), fills ``ticket_counts`` from the rows, and drops the database at the end.

The data: 10,000 customers. Twenty of them are all called "Ivan Petrov" and own every
fifth ticket (200,000 tickets under that one name: the filter a deep page is costly
for); the others own about 80 each. Every three consecutive tickets share a created_at,
so the id tie-break is exercised at scale.

Measured, in one run, under the same gunicorn settings and load generator:
  bare          the bare Flask endpoint (bench/bare_app.py)
  first page    ?user_name=Ivan Petrov&page=1&size=20
  near the end  page 9,990 of 10,000 (the goal: <= 2x the first page's p50)
  middle        page 5,000 again and again: the first request skips 100,000 index entries
                and remembers the key just before the page; every later one seeks from it
  middle crawl  pages 5,000-5,199 round-robin: each page seeks from the remembered edge of
                its neighbour (keyset) once a first pass has been made
  far, cold     first visits of far pages (every 7th page of 1,000-9,000, a fresh set each
                round, no warm-up): nothing remembered, each skips 20,000-100,000 index
                entries from the nearer end -- the honest worst case; shown, not a goal
  auth/me       GET /api/v1/auth/me: carhub's own floor (auth, one primary-key read, schema)
It also prints what PostgreSQL spends on each page's SQL (EXPLAIN ANALYZE) against a
plain ``SELECT * ... OFFSET n`` and ``count(*)``, and checks the deep pages' contents
against that plain query, so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

from bench.api import (
    create_database,
    drop_database,
    forget_redis_keys,
    login,
    prepare_schema,
    request,
)
from bench.harness import GunicornSettings, LoadResult, available_tool, format_table, serve

HOT_NAME = "Ivan Petrov"
TICKETS = 1_000_000
CUSTOMERS = 10_000
HOT_CUSTOMERS = 20  # own every fifth ticket
SIZE = 20
GOAL = 2.0
CRAWL = 200  # pages in the middle crawl


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tag = f"carhub_bench_tickets_{os.getpid()}"
    settings = GunicornSettings(workers=args.workers, threads=args.threads)
    print(f"bench.tickets: {settings.describe()}, load by {args.tool or available_tool()}, {args.connections} conns,")
    print(f"  {args.duration:g}s per phase after {args.warmup:g}s warm-up; cores: {os.cpu_count()}")
    database_url = create_database(tag)
    prefix = f"{tag}:"
    try:
        prepare_schema(database_url, prefix)
        load_tickets(database_url, args.tickets)
        results, pages = run(args, settings, database_url, prefix)
        explain(database_url, pages)
    finally:
        drop_database(tag)
        forget_redis_keys(prefix)
        print(f"dropped database {tag}")

    print()
    print(format_table(results, baseline="bare"))
    labels = ("first page", "near the end", "middle", "middle crawl", "far, cold", "bare", "auth/me")
    first, deep, middle, crawl, cold, bare, floor = (median(results, label) for label in labels)
    print(f"\nmedians over {args.rounds} round(s):")
    for label, result in (("near the end", deep), ("middle", middle), ("middle crawl", crawl), ("far, cold", cold)):
        print(
            f"{label + ' / first page:':<27}p50 {result.p50_ms / first.p50_ms:.2f}x, "
            f"req/s {first.rps / result.rps:.2f}x slower"
        )
    print(f"first page / bare:         req/s {first.rps / bare.rps:.2f}x, p50 {first.p50_ms / bare.p50_ms:.2f}x")
    print(f"auth/me / bare:            req/s {floor.rps / bare.rps:.2f}x, p50 {floor.p50_ms / bare.p50_ms:.2f}x")
    print(f"first page / auth/me:      req/s {first.rps / floor.rps:.2f}x, p50 {first.p50_ms / floor.p50_ms:.2f}x")
    verdict = "met" if deep.p50_ms <= GOAL * first.p50_ms else "MISSED"
    print(f"goal page near the end <= {GOAL:g}x first page (p50): {verdict}")
    return 0


def median(results: list[LoadResult], label: str) -> LoadResult:
    """The round with the median p50 for ``label`` (rounds interleave, so load drifts hit all)."""
    mine = sorted((result for result in results if result.label == label), key=lambda result: result.p50_ms)
    return mine[len(mine) // 2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tickets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=TICKETS, help="tickets to load (default 1,000,000)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per phase (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per phase (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all targets (default 3)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for every server (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    parser.add_argument("--tool", choices=("wrk", "python"), help="load generator (default: wrk if installed)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- data


def load_tickets(database_url: str, count: int) -> None:
    """Customers and ``count`` tickets in bulk SQL; indexes rebuilt after; counters filled."""
    import psycopg

    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO users (id, email, password_hash, full_name, role, created_at)
            SELECT gen_random_uuid()::text, 'c' || lpad(g::text, 6, '0') || '@bench.example', 'x',
                   CASE WHEN g <= %(hot)s THEN %(name)s ELSE 'Customer ' || g END, 'customer', now()
            FROM generate_series(1, %(customers)s) AS g
            """,
            {"hot": HOT_CUSTOMERS, "name": HOT_NAME, "customers": CUSTOMERS},
        )
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tickets' AND indexname <> 'pk_tickets'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(
            """
            CREATE TEMP TABLE bench_customers AS
            SELECT id, full_name, row_number() OVER (ORDER BY email) AS n FROM users WHERE role = 'customer'
            """
        )
        conn.execute("CREATE INDEX ON bench_customers (n)")
        conn.execute(
            """
            INSERT INTO tickets (id, user_id, user_name, subject, description, status, version, created_at, updated_at)
            SELECT gen_random_uuid()::text, c.id, c.full_name, 'Ticket ' || g, 'Something about my car, #' || g,
                   (ARRAY['open','open','open','open','open','open','in_progress','in_progress','resolved','closed'])
                       [1 + g %% 10],
                   1, t.at, t.at
            FROM generate_series(1, %(count)s) AS g
            CROSS JOIN LATERAL (SELECT now() - (g / 3) * interval '20 seconds' AS at) AS t
            JOIN bench_customers AS c
              ON c.n = CASE WHEN g %% 5 = 0 THEN 1 + (g / 5) %% %(hot)s
                            ELSE %(hot)s + 1 + g %% (%(customers)s - %(hot)s) END
            """,
            {"count": count, "hot": HOT_CUSTOMERS, "customers": CUSTOMERS},
        )
        loaded = time.monotonic()
        for _, definition in indexes:
            conn.execute(definition)
        indexed = time.monotonic()
        conn.execute("DELETE FROM ticket_counts")
        conn.execute(
            """
            INSERT INTO ticket_counts (user_name, status, n)
            SELECT user_name, status, count(*) FROM tickets GROUP BY user_name, status
            UNION ALL
            SELECT '', status, count(*) FROM tickets GROUP BY status
            """
        )
        conn.execute("VACUUM ANALYZE tickets")
        conn.execute("VACUUM ANALYZE ticket_counts")
        conn.execute("VACUUM ANALYZE users")
        total = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        hot = conn.execute("SELECT count(*) FROM tickets WHERE user_name = %s", (HOT_NAME,)).fetchone()[0]
    print(
        f"loaded {total:,} tickets ({hot:,} for {HOT_NAME!r}) in {loaded - started:.0f}s, "
        f"{len(indexes)} indexes in {indexed - loaded:.0f}s, counted and vacuumed in {time.monotonic() - indexed:.0f}s"
    )


# ---------------------------------------------------------------- the run


def run(
    args: argparse.Namespace, settings: GunicornSettings, database_url: str, prefix: str
) -> tuple[list[LoadResult], dict[str, int]]:
    common = {
        "DATABASE_URL": database_url,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "CACHE_KEY_PREFIX": prefix,
        "RABBITMQ_URL": None,
        "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
        "CARHUB_ADMIN_EMAIL": None,
        "CARHUB_ADMIN_PASSWORD": None,
        "AUTH_RATE_LIMIT": "1000 per second",
        "PROMETHEUS_MULTIPROC_DIR": None,
    }
    results: list[LoadResult] = []
    with ExitStack() as stack:
        bare = stack.enter_context(serve("bench.bare_app:create_app()", settings))
        api = stack.enter_context(serve("app:create_app()", settings, env=common))
        auth = {"Authorization": f"Bearer {login(api)}"}
        base = f"/api/v1/tickets?user_name={quote(HOT_NAME)}&size={SIZE}"
        status, body = request(api, "GET", f"{base}&page=1", headers=auth)
        if status != 200:
            raise RuntimeError(f"first page answered {status}: {body}")
        total = body["total"]
        last = math.ceil(total / SIZE)
        pages = {"first page": 1, "near the end": max(1, last - 10), "middle": max(1, last // 2)}
        print(f"{HOT_NAME!r}: total {total:,}, {last:,} pages of {SIZE}; pages loaded: {pages}")
        crawl = list(range(pages["middle"], pages["middle"] + CRAWL))
        for page in crawl:  # a first pass: every page remembers its edges for its neighbours
            request(api, "GET", f"{base}&page={page}", headers=auth)
        checked = {**pages, "crawl start": crawl[1], "crawl middle": crawl[CRAWL // 2], "crawl end": crawl[-1]}
        checked["far page"] = last // 10 - 50  # skipped to on the first visit, sought on the second:
        check_pages(database_url, api, auth, base, checked)
        check_pages(database_url, api, auth, base, {"far page again": checked["far page"]})
        options = {"duration": args.duration, "warmup": args.warmup, "connections": args.connections, "tool": args.tool}
        targets: list[tuple[str, Any, Any, dict[str, str]]] = [("bare", bare, "/car", {})]
        targets += [(label, api, f"{base}&page={page}", auth) for label, page in pages.items()]
        targets += [("middle crawl", api, [f"{base}&page={page}" for page in crawl], auth)]
        targets += [("auth/me", api, "/api/v1/auth/me", auth)]
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}")
            # Never a neighbour of another round's pages, nor of the middle and its crawl.
            cold = [
                page
                for page in range(last // 10 + 2 * round_, last - last // 10, 7)
                if not pages["middle"] - 1 <= page <= pages["middle"] + CRAWL
            ]
            rounds_targets = [*targets, ("far, cold", api, [f"{base}&page={page}" for page in cold], auth)]
            for label, server, target, headers in rounds_targets:
                cold_options = {**options, "warmup": 0} if label == "far, cold" else options
                result = server.load(target, headers=headers, label=label, **cold_options)
                results.append(result)
                print(
                    f"  {label:<13} {result.rps:8.1f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
                )
    return results, pages


def check_pages(database_url: str, api: Any, auth: dict[str, str], base: str, pages: dict[str, int]) -> None:
    """Each page's ids must equal what a plain ORDER BY ... OFFSET query returns."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        for label, page in pages.items():
            status, body = request(api, "GET", f"{base}&page={page}", headers=auth)
            got = [item["id"] for item in body["items"]] if status == 200 else body
            want = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM tickets WHERE user_name = %s ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s",
                    (HOT_NAME, SIZE, (page - 1) * SIZE),
                )
            ]
            if got != want:
                raise RuntimeError(f"{label} (page {page}) differs from the plain query: {got[:3]} vs {want[:3]}")
    print("  page contents match the plain ORDER BY/OFFSET query")


def explain(database_url: str, pages: dict[str, int]) -> None:
    """What PostgreSQL spends on the SQL behind each page, against the naive version."""
    import psycopg

    def ms(conn: Any, sql: str, params: tuple[Any, ...]) -> tuple[float, str]:
        plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchone()[0][0]
        scans: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            if "Scan" in node["Node Type"]:
                scans.append(f"{node['Node Type']} {node.get('Index Name') or node.get('Relation Name')}")
            for child in node.get("Plans", []):
                walk(child)

        walk(plan["Plan"])
        return plan["Execution Time"], " + ".join(scans)

    with psycopg.connect(database_url) as conn:
        print("\nPostgreSQL execution time per page (EXPLAIN ANALYZE, warm cache):")
        counted, how = ms(conn, "SELECT coalesce(sum(n), 0) FROM ticket_counts WHERE user_name = %s", (HOT_NAME,))
        naive, naive_how = ms(conn, "SELECT count(*) FROM tickets WHERE user_name = %s", (HOT_NAME,))
        print(f"  total:  ticket_counts {counted:7.2f} ms ({how})   vs count(*) {naive:7.2f} ms ({naive_how})")
        total = conn.execute("SELECT count(*) FROM tickets WHERE user_name = %s", (HOT_NAME,)).fetchone()[0]
        for label, page in pages.items():
            offset = (page - 1) * SIZE
            take = min(SIZE, total - offset)
            after = total - offset - take
            if after < offset:
                inner = "ORDER BY created_at, id LIMIT %s OFFSET %s"
                params: tuple[Any, ...] = (HOT_NAME, take, after)
            else:
                inner = "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s"
                params = (HOT_NAME, take, offset)
            sql = (  # the statement services.tickets.list_tickets issues
                "SELECT t.* FROM tickets AS t JOIN (SELECT id, created_at FROM tickets WHERE user_name = %s "
                f"{inner}) AS k ON t.id = k.id ORDER BY k.created_at DESC, k.id DESC"
            )
            ours, ours_how = ms(conn, sql, params)
            plain_sql = (
                "SELECT * FROM tickets WHERE user_name = %s ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s"
            )
            plain, plain_how = ms(conn, plain_sql, (HOT_NAME, SIZE, offset))
            print(
                f"  {label:<13} page {page:>6}: deferred join {ours:7.2f} ms ({ours_how})\n"
                f"  {'':<13} {'':>11} vs SELECT * OFFSET {offset}: {plain:7.2f} ms ({plain_how})"
            )


if __name__ == "__main__":
    began = time.monotonic()
    code = main()
    print(f"bench.tickets took {time.monotonic() - began:.0f}s")
    sys.exit(code)
