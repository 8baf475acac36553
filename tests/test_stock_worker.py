"""Stock through the real worker process without a broker (the outbox table is the queue).

The same HTTP door and the same handlers as over RabbitMQ; the worker is another
process, so this also shows its cache invalidations reach the web process.
"""

from __future__ import annotations

import pytest

from tests.stock_helpers import COMMANDS, WEBHOOK, command, levels, movement_cloudevent, qty_of

pytestmark = pytest.mark.slow


def test_commands_and_a_webhook_movement_applied_by_the_worker(app, staff, start_worker, wait_until):
    assert qty_of(staff, "SKU123") == 0  # a cached zero the worker must invalidate
    start_worker(app)
    command(staff, "increase", "SKU123", 10)
    last = command(staff, "decrease", "SKU123", 4).get_json()["command_id"]
    too_many = command(staff, "decrease", "SKU123", 7).get_json()["command_id"]
    wait_until(lambda: staff.get(f"{COMMANDS}/{too_many}").get_json()["status"] != "pending", message="the commands")
    assert staff.get(f"{COMMANDS}/{last}").get_json()["status"] == "applied"
    assert staff.get(f"{COMMANDS}/{too_many}").get_json()["reason"] == "insufficient_stock"
    assert qty_of(staff, "SKU123") == 6

    departure = movement_cloudevent("departure", "mv-w", "main", "SKU123", 5)
    arrival = movement_cloudevent("arrival", "mv-w", "north", "SKU123", 5, timestamp="2025-02-18T12:13:56Z")
    for cloudevent in (departure, arrival, departure):
        assert staff.post(WEBHOOK, json=cloudevent).status_code == 202
    wait_until(
        lambda: staff.get("/api/v1/movements/mv-w").get_json().get("status") == "completed",
        message="the movement",
    )
    movement = staff.get("/api/v1/movements/mv-w").get_json()
    assert movement["transit_seconds"] == 60.0 and movement["quantity_difference"] == 0
    wait_until(lambda: levels() == {("main", "SKU123"): 1, ("north", "SKU123"): 5}, message="the levels")
    assert qty_of(staff, "SKU123") == 1 and qty_of(staff, "SKU123", "north") == 5
