"""Instructions per POST /cars and per consumed car event, counted by callgrind.

Run: ``.venv/bin/python -m bench.instructions [--count 200]`` (valgrind, and this
machine's PostgreSQL, Redis and RabbitMQ; about three minutes).

Why: the hosts here share their cores, and the same code's CPU time swings twice over
within a minute, so a change of 10% cannot be seen in seconds. Instructions counted by
``valgrind --tool=callgrind`` do not depend on the neighbours: the same code gives the
same count. What is counted is carhub's own process (app, SQLAlchemy, drivers), not
PostgreSQL's or Redis's. Each figure is the difference of two runs, one doing ``count``
operations more than the other, divided by ``count``, so the setup (imports, the
database, the users) cancels out.

* ``post``: ``POST /api/v1/cars`` through Flask's test client (no gunicorn): argument
  schema, token check, the car and its outbox row, the cache fence, the commit.
* ``consume``: one ``car.created`` message to ``carhub.notifications`` through the
  consumer's unit of work (decode, inbox row, notification, commit), one per batch as
  at a steady low rate.

There is no baseline and no goal: it is the yardstick for a change to those paths, run
before and after it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

from flask import Flask

from bench.harness import ROOT

WARM_UP = 20  # operations before counting starts to matter: caches, prepared statements


def count_instructions(kind: str, operations: int) -> int:
    """Instructions callgrind counted for a whole run of ``operations`` of ``kind``."""
    completed = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--inner",
            kind,
            str(operations),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", completed.stderr)
    if not found:
        raise RuntimeError(f"callgrind printed no total:\n{completed.stderr[-2000:]}")
    return int(found.group(1))


def inner(kind: str, operations: int) -> None:
    """The measured process: set up, then ``WARM_UP + operations`` of ``kind``."""
    from bench.messaging_env import backbone
    from extensions import db
    from services import users

    with backbone() as env, env.app.app_context():
        owner_id = users.create_user("owner@example.com", "long-enough-pw", "Owner").id
        if kind == "post":
            _posts(env.app, owner_id, WARM_UP + operations)
        else:
            _consume(owner_id, WARM_UP + operations)
        db.session.remove()


def _posts(app: Flask, owner_id: str, operations: int) -> None:
    from services import users

    users.create_user("staff@example.com", "long-enough-pw", "Staff", role="staff")
    client = app.test_client()
    login = client.post("/api/v1/auth/login", json={"email": "staff@example.com", "password": "long-enough-pw"})
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}"}
    for n in range(operations):
        body = {"vin": f"1HGCM{n:012d}", "make": "VW", "model": "Golf", "year": 2019, "owner_id": owner_id}
        response = client.post("/api/v1/cars", json=body, headers=headers)
        assert response.status_code == 201, response.get_json()


def _consume(owner_id: str, operations: int) -> None:
    from consumer import PERMANENT, handle
    from extensions import db
    from messaging.envelope import body_text
    from messaging.processing import Delivery, Processor
    from models.messaging import OutboxMessage
    from services.events import record_event

    event_ids = [
        record_event("car.created", f"car-{n}", {"id": f"car-{n}", "owner_id": owner_id, "vin": f"V{n}"})
        for n in range(operations)
    ]
    db.session.commit()
    rows = {row.id: row for row in db.session.scalars(db.select(OutboxMessage))}
    deliveries = [
        Delivery(queue="carhub.notifications", routing_key="car.created", body=body_text(rows[i]).encode())
        for i in event_ids
    ]
    db.session.expunge_all()  # a session full of objects would make every commit expire them
    processor = Processor(handle, PERMANENT)
    for delivery in deliveries:
        [(_, outcome)] = processor.run([delivery])
        assert outcome.kind == "done", outcome


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200, help="operations counted (default 200)")
    parser.add_argument("--inner", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner[0], int(args.inner[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind (apt-get install valgrind)")
        return 1
    print(f"bench.instructions: {args.count} operations counted, callgrind")
    for kind, label in (("post", "POST /api/v1/cars"), ("consume", "one car.created consumed")):
        extra = count_instructions(kind, args.count) - count_instructions(kind, 0)
        print(f"{label:28}{extra / args.count / 1e6:8.2f} M instructions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
