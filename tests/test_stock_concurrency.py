"""Concurrent consumers on one sku: never negative, never a lost update, each command once.

Each thread is a consumer with its own app context, so its own session and database
connection, applying messages through the real inbox unit of work and handler table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import select

from extensions import db
from models.base import utcnow
from models.messaging import OutboxMessage
from tests.conftest import Api
from tests.messaging_helpers import deliver, event_from_outbox
from tests.stock_helpers import (
    STOCK_QUEUE,
    WEBHOOK,
    bare_command,
    command,
    command_statuses,
    ledger_count,
    levels,
    movement_cloudevent,
    outbox_types,
    qty_of,
)


def _race(app, jobs: list[Callable[[], object]]) -> list[object]:
    """Run every job at once, each in a thread with its own app context; re-raise failures."""
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(index: int, job: Callable[[], object]) -> None:
        with app.app_context():
            try:
                start.wait(timeout=30)
                results[index] = job()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def _take_outbox(kind: str) -> list:
    """Mark the unsent rows of ``kind`` as published and return them as events."""
    rows = db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.type == kind, OutboxMessage.published_at.is_(None))
    ).all()
    events = [event_from_outbox(row) for row in rows]
    for row in rows:
        row.published_at = utcnow()
    db.session.commit()
    return events


def test_50_concurrent_decreases_of_1_against_20(app, staff):
    assert deliver(STOCK_QUEUE, bare_command("increase", "HOT", 20, command_id="stock-up"))
    for _ in range(50):
        assert command(staff, "decrease", "HOT", 1).status_code == 202
    decreases = _take_outbox("stock.command.decrease")
    assert len(decreases) == 50
    db.session.rollback()  # the test's own session holds nothing while the consumers race

    applied = _race(app, [lambda e=e: deliver(STOCK_QUEUE, e) for e in decreases])

    assert applied == [True] * 50  # each message consumed (rejections are acked, not errors)
    assert levels() == {("main", "HOT"): 0}
    assert command_statuses() == {"applied": 21, "rejected": 30}  # 20 decreases + the stock-up
    assert ledger_count(sku="HOT", reason="decrease") == 20
    assert outbox_types().count("stock.changed") == 21
    assert outbox_types().count("stock.command.rejected") == 30
    assert qty_of(staff, "HOT") == 0  # and the cached read agrees


def test_the_same_commands_delivered_twice_concurrently_apply_once(app, staff):
    """Two consumers get every message (a redelivery race): the inbox and the command
    claim make each effect happen once."""
    for _ in range(10):
        command(staff, "increase", "TWICE", 2)
    increases = _take_outbox("stock.command.increase")
    db.session.rollback()
    results = _race(app, [lambda e=e: deliver(STOCK_QUEUE, e) for e in increases + increases])
    assert sorted(results) == [False] * 10 + [True] * 10
    assert levels() == {("main", "TWICE"): 20}
    assert ledger_count(sku="TWICE") == 10


def test_concurrent_first_increases_of_a_new_sku_in_a_new_warehouse_lose_nothing(app, staff):
    """Everyone inserts the new (warehouse, sku) at once: the upsert turns losers into adds."""
    events = [bare_command("increase", "FRESH", 1, warehouse_id="pop-up") for _ in range(20)]
    _race(app, [lambda e=e: deliver(STOCK_QUEUE, e) for e in events])
    assert levels() == {("pop-up", "FRESH"): 20}
    assert ledger_count(sku="FRESH") == 20


def test_racing_sides_of_many_movements_pair_up(app, staff):
    """Departures and arrivals of the same movements applied at once by different consumers."""
    from tests.stock_helpers import movement_cloudevent, movement_event

    assert deliver(STOCK_QUEUE, bare_command("increase", "MOV", 10, warehouse_id="src"))
    events = []
    for n in range(10):
        events.append(movement_event(movement_cloudevent("departure", f"race-{n}", "src", "MOV", 1)))
        events.append(movement_event(movement_cloudevent("arrival", f"race-{n}", "dst", "MOV", 1)))
    _race(app, [lambda e=e: deliver(STOCK_QUEUE, e) for e in events])
    assert levels() == {("src", "MOV"): 0, ("dst", "MOV"): 10}
    for n in range(10):
        movement = staff.get(f"/api/v1/movements/race-{n}").get_json()
        assert movement["status"] == "completed" and movement["quantity_difference"] == 0


def test_the_same_movement_posted_to_the_webhook_at_once_is_accepted_every_time_and_queued_once(app, staff):
    """Retries of one webhook call that overlap: each caller hears 202, the outbox holds it once."""
    cloudevent = movement_cloudevent("departure", "mv-race", "WH-A", "P-RACE", 5)
    answers = _race(app, [lambda: Api(app.test_client(), staff.token).post(WEBHOOK, json=cloudevent).status_code] * 8)
    assert answers == [202] * 8
    assert outbox_types().count("stock.movement.departure") == 1


def test_the_driver_path_raises_what_sqlalchemy_would_and_drops_a_lost_connection(app, backend):
    """The claim runs on psycopg directly (services.stock._fetch_one_on_driver); the
    consumer's retry rules must see the same errors as from session.execute."""
    if backend == "embedded":
        pytest.skip("the driver path is PostgreSQL's")
    from sqlalchemy import exc, text

    from extensions import db
    from services.stock import _fetch_one_on_driver

    with pytest.raises(exc.DataError):  # permanent for the consumer: dead-lettered
        _fetch_one_on_driver("SELECT %(n)s::int", {"n": "not a number"})
    db.session.rollback()
    [pid] = _fetch_one_on_driver("SELECT pg_backend_pid()", {})
    with db.engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(exc.OperationalError) as lost:  # transient: retried
        _fetch_one_on_driver("SELECT 1", {})
    assert lost.value.connection_invalidated
    db.session.rollback()
    assert _fetch_one_on_driver("SELECT 1", {}) == (1,)  # on a fresh connection
