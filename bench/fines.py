"""GET /api/v1/fines at the service layer with 1,000,000 fines: what the visibility rule costs.

Run: ``.venv/bin/python -m bench.fines`` (PostgreSQL and Redis of this machine; about a
minute). It makes a database of its own (``carhub_bench_fines_<pid>``), loads the rows
with ``INSERT ... SELECT generate_series``, ``VACUUM ANALYZE``s, and drops it at the end.

The data: 20,000 customers owning 50,000 plated cars; 1,000,000 fines over 200,000
plates (so most fined plates belong to no known car). One ordinary customer owns
3 cars (a few fines each); one fleet customer owns 50 cars with 2,000 fines each
(100,000 fines: the costly case of "the fines of the plates of my cars").

Each target is the service call the view makes (``services.fines``), timed in process
with a warm connection, median of ``--repeat`` interleaved rounds. The fleet's page is
timed both ways: the per-plate merge the service uses and the plain sorted query. The baseline is one fine by
primary key through the same visibility rule (``get_fine`` as staff): the floor of a
query through this stack. It also prints the PostgreSQL plan of the fleet customer's
page, and checks that page against a plain SQL query so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.api import create_database, drop_database, forget_redis_keys, prepare_schema

FINES = 1_000_000
PLATES = 200_000
CARS = 50_000
CUSTOMERS = 20_000
FLEET_CARS = 50
FLEET_FINES_PER_CAR = 2_000


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tag = f"carhub_bench_fines_{os.getpid()}"
    database_url = create_database(tag)
    prefix = f"{tag}:"
    try:
        prepare_schema(database_url, prefix)
        load(database_url, args.fines)
        measure(args)
    finally:
        drop_database(tag)
        forget_redis_keys(prefix)
        print(f"dropped database {tag}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fines", type=int, default=FINES, help="background fines to load (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=100, help="rounds over all targets (default 100)")
    return parser.parse_args(argv)


def load(database_url: str, count: int) -> None:
    import psycopg

    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO users (id, email, password_hash, full_name, role, created_at)
            SELECT 'u' || lpad(g::text, 35, '0'), 'c' || g || '@bench.example', 'x', 'Customer ' || g,
                   'customer', now()
            FROM generate_series(1, %(customers)s) AS g
            """,
            {"customers": CUSTOMERS},
        )
        # Plates P000001..: cars 1..50,000 carry plates 1..50,000, owned round-robin by
        # customers 3..; customer 1 owns 3 cars (plates 1..3), customer 2 (the fleet)
        # owns 50 cars whose plates F01..F50 get 2,000 fines each.
        conn.execute(
            """
            INSERT INTO cars (id, vin, make, model, year, license_plate, status, owner_id, version,
                              created_at, updated_at)
            SELECT 'c' || lpad(g::text, 35, '0'), lpad(g::text, 17, '0'), 'Lada', 'Vesta', 2020,
                   'P' || lpad(g::text, 6, '0'), 'available',
                   'u' || lpad((CASE WHEN g <= 3 THEN 1 ELSE 3 + g %% (%(customers)s - 2) END)::text, 35, '0'),
                   1, now(), now()
            FROM generate_series(1, %(cars)s) AS g
            """,
            {"cars": CARS, "customers": CUSTOMERS},
        )
        conn.execute(
            """
            INSERT INTO cars (id, vin, make, model, year, license_plate, status, owner_id, version,
                              created_at, updated_at)
            SELECT 'f' || lpad(g::text, 35, '0'), 'F' || lpad(g::text, 16, '0'), 'GAZ', 'Gazelle', 2019,
                   'F' || lpad(g::text, 2, '0'), 'available', 'u' || lpad('2', 35, '0'), 1, now(), now()
            FROM generate_series(1, %(fleet)s) AS g
            """,
            {"fleet": FLEET_CARS},
        )
        conn.execute(
            """
            INSERT INTO fines (id, license_plate, amount, reason, issued_at, created_at)
            SELECT gen_random_uuid()::text, 'P' || lpad((1 + g %% %(plates)s)::text, 6, '0'),
                   500 + (g %% 20) * 100, 'Speeding', now() - (g / 3) * interval '1 minute', now()
            FROM generate_series(1, %(count)s) AS g
            """,
            {"count": count, "plates": PLATES},
        )
        conn.execute(
            """
            INSERT INTO fines (id, license_plate, amount, reason, issued_at, created_at)
            SELECT gen_random_uuid()::text, 'F' || lpad((1 + g %% %(fleet)s)::text, 2, '0'),
                   1000, 'Parking', now() - g * interval '1 minute', now()
            FROM generate_series(1, %(fleet_fines)s) AS g
            """,
            {"fleet": FLEET_CARS, "fleet_fines": FLEET_CARS * FLEET_FINES_PER_CAR},
        )
        for table in ("users", "cars", "fines"):
            conn.execute(f"VACUUM ANALYZE {table}")
        total = conn.execute("SELECT count(*) FROM fines").fetchone()[0]
    print(f"loaded {total:,} fines, {CARS + FLEET_CARS:,} cars in {time.monotonic() - started:.0f}s")


def measure(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from app import create_app
    from extensions import db
    from models.fines import Fine
    from services import fines
    from services.pagination import paginate

    app = create_app({"RABBITMQ_URL": ""})
    staff_id = "bench-staff"
    customer = fines.Viewer("u" + "1".rjust(35, "0"))
    fleet = fines.Viewer("u" + "2".rjust(35, "0"))
    staff = fines.Viewer(staff_id, staff=True)
    with app.app_context():
        some_fine = db.session.scalar(select(Fine.id).where(Fine.license_plate == "P000002").limit(1))
        unpaid = list(db.session.scalars(select(Fine.id).where(Fine.license_plate.like("P%")).limit(args.repeat)))
        db.session.rollback()
        plain_fleet = fines._visible(fleet).order_by(*fines.NEWEST_FIRST)
        targets: list[tuple[str, Callable[[int], Any]]] = [
            ("one fine by id (baseline)", lambda _: fines.get_fine(staff, some_fine)),
            ("customer, all their fines", lambda _: fines.list_fines(customer, 1, 20)),
            ("customer, one plate", lambda _: fines.list_fines(customer, 1, 20, license_plate="P000002")),
            ("customer, another's plate", lambda _: fines.list_fines(customer, 1, 20, license_plate="P000500")),
            ("fleet, page 1 (merged)", lambda _: fines.list_fines(fleet, 1, 20)),
            ("fleet, page 1 (plain query)", lambda _: paginate(plain_fleet, 1, 20)),
            ("fleet, count alone", lambda _: db.session.scalar(count_of(plain_fleet))),
            ("fleet, unpaid (merged)", lambda _: fines.list_fines(fleet, 1, 20, paid=False)),
            ("staff, every fine, page 1", lambda _: fines.list_fines(staff, 1, 20)),
            ("staff, one plate", lambda _: fines.list_fines(staff, 1, 20, license_plate="P000777")),
            ("pay (staff), commit", lambda i: fines.pay_fine(staff, unpaid[i])),
        ]
        for _, call in targets:
            call(0)  # warm: connection, statement cache, buffers
            db.session.rollback()
        # Rounds interleave the targets, so load from elsewhere on the machine hits all alike.
        times: dict[str, list[float]] = {label: [] for label, _ in targets}
        for i in range(1, args.repeat):
            for label, call in targets:
                started = time.perf_counter()
                call(i)
                times[label].append(time.perf_counter() - started)
                db.session.rollback()
        rows = [
            (label, statistics.median(spent) * 1000, sorted(spent)[int(len(spent) * 0.99)] * 1000)
            for label, spent in times.items()
        ]

        check_fleet_page(fines, fleet)
        plans = {
            "plain": explain(plain_fleet.limit(20)),
            "count": explain(count_of(plain_fleet)),
        }
        db.session.rollback()
        db.engine.dispose()

    base = rows[0][1]
    print(f"\n{'target':<30}{'p50 ms':>9}{'p99 ms':>9}{'p50 / baseline':>16}")
    for label, p50, p99 in rows:
        print(f"{label:<30}{p50:>9.2f}{p99:>9.2f}{p50 / base:>15.1f}x")
    for name, plan in plans.items():
        print(f"\nplan of the fleet customer's {name} query (100,000 visible fines):")
        for line in plan:
            print("  " + line)


def count_of(query: Any) -> Any:
    from sqlalchemy import func, select

    return select(func.count()).select_from(query.order_by(None).subquery())


def explain(query: Any) -> list[str]:
    from sqlalchemy import text

    from extensions import db

    compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
    return list(db.session.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {compiled}")).scalars())


def check_fleet_page(fines: Any, fleet: Any) -> None:
    """The service's page equals the plain SQL answer (newest first, id tie-break)."""
    from sqlalchemy import text

    from extensions import db

    page = fines.list_fines(fleet, 1, 20)
    expected = db.session.execute(
        text(
            "SELECT f.id FROM fines f WHERE f.license_plate IN "
            "(SELECT license_plate FROM cars WHERE owner_id = :owner) ORDER BY f.issued_at DESC, f.id DESC LIMIT 20"
        ),
        {"owner": fleet.user_id},
    ).scalars()
    assert [item["id"] for item in page.items] == list(expected), "the fleet page is wrong"
    assert page.total == FLEET_CARS * FLEET_FINES_PER_CAR, page.total
    db.session.rollback()


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench.fines took {time.monotonic() - started:.0f}s")
    sys.exit(code)
