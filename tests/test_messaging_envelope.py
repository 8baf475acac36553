"""Envelope out, tolerant decoding in, and the topology's shape (no services needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from messaging import topology
from messaging.envelope import decode, envelope, outgoing, parse_time
from models.messaging import OutboxMessage

WAREHOUSE = {
    "id": "b3b53031-e83a-4654-87f5-b6b6fb09fd99",
    "source": "WH-3322",
    "specversion": "1.0",
    "type": "ru.retail.warehouses.movement",
    "datacontenttype": "application/json",
    "dataschema": "ru.retail.warehouses.movement.v1.0",
    "time": 1737439421623,
    "subject": "WH-3322:DEPARTURE",
    "destination": "ru.retail.warehouses",
    "data": {"movement_id": "c6290746", "product_id": "4705204f", "quantity": 100, "event": "departure"},
}


def test_a_warehouse_cloudevent_is_dispatched_by_routing_key_with_its_data():
    message = decode("stock.movement.departure", json.dumps(WAREHOUSE).encode(), message_id="ignored")
    assert message.type == "stock.movement.departure"
    assert message.id == WAREHOUSE["id"] and message.data == WAREHOUSE["data"]
    assert message.source == "WH-3322" and message.subject == "WH-3322:DEPARTURE"
    assert message.time == datetime(2025, 1, 21, 6, 3, 41, 623000, tzinfo=UTC)
    assert message.extensions["destination"] == "ru.retail.warehouses"
    assert message.extensions["cloudevent_type"] == "ru.retail.warehouses.movement"


def test_bare_commands_take_their_id_from_message_id_then_command_id_then_the_content():
    body = json.dumps({"action": "increase", "sku": "SKU123", "qty": 10}).encode()
    assert decode("stock.command.increase", body, message_id="m-1").id == "m-1"
    with_id = json.dumps({"action": "increase", "sku": "SKU123", "qty": 10, "command_id": "c-1"}).encode()
    assert decode("stock.command.increase", with_id).id == "c-1"
    first, again = decode("stock.command.increase", body), decode("stock.command.increase", body)
    assert first.id == again.id and first.id.startswith("sha256:")
    assert decode("stock.command.decrease", body).id != first.id  # the routing key is part of it
    assert first.data == {"action": "increase", "sku": "SKU123", "qty": 10}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{nope", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"specversion": "1.0", "data": {}}).encode(), "needs an id"),
        (json.dumps({"specversion": "1.0", "id": "x", "data": [1]}).encode(), "JSON object"),
        (json.dumps({"specversion": "1.0", "id": "x", "time": "yesterday"}).encode(), "Invalid isoformat"),
    ],
)
def test_what_can_never_be_applied_raises_value_error(body, error):
    with pytest.raises(ValueError, match=error):
        decode("car.created", body)


def test_time_is_epoch_milliseconds_or_rfc3339():
    assert parse_time(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time("2026-11-22T10:00:00Z") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_time("2026-11-22T13:00:00+03:00") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_time(None) is None
    with pytest.raises(TypeError):
        parse_time(True)


def test_an_outbox_row_becomes_a_cloudevent_with_the_properties_of_events_md():
    row = OutboxMessage(
        id="e-1",
        type="car.created",
        source="carhub/cars",
        subject="car-1",
        data={"vin": "X"},
        correlation_id="req-1",
        created_at=datetime(2026, 11, 22, 10, tzinfo=UTC),
    )
    message = outgoing(row, topology.EVENTS_EXCHANGE)
    assert (message.exchange, message.routing_key) == ("carhub.events", "car.created")
    assert json.loads(message.body) == envelope(row)
    assert envelope(row)["time"] == "2026-11-22T10:00:00Z" and envelope(row)["specversion"] == "1.0"
    props = message.properties
    assert props.content_type == "application/cloudevents+json" and props.message_id == "e-1"
    assert props.type == "car.created" and props.app_id == "carhub" and props.delivery_mode == 2
    assert props.correlation_id == "req-1" and props.timestamp == int(row.created_at.timestamp())
    assert decode("car.created", message.body).data == {"vin": "X"}


def test_a_replay_row_sends_the_original_bytes_to_one_queue():
    row = OutboxMessage(
        id="r-1",
        type="stock.command.increase",
        source="carhub/replay",
        data={},
        created_at=datetime(2026, 11, 22, tzinfo=UTC),
        destination="carhub.stock",
        payload='{"sku": "A", "qty": 1}',
        headers={topology.ROUTING_KEY_HEADER: "stock.command.increase", "properties": {"message_id": "orig"}},
    )
    message = outgoing(row, topology.EVENTS_EXCHANGE)
    assert (message.exchange, message.routing_key) == ("", "carhub.stock")  # default exchange
    assert message.body == b'{"sku": "A", "qty": 1}' and message.properties.message_id == "orig"
    assert message.properties.headers == {topology.ROUTING_KEY_HEADER: "stock.command.increase"}


def test_topology_work_queues_are_quorum_with_limits_and_dead_lettering_declared_first():
    specs = {queue.name: queue for queue in topology.queues()}
    names = [queue.name for queue in topology.queues()]
    for work in topology.WORK_QUEUES:
        arguments = specs[work.name].arguments
        assert arguments["x-queue-type"] == "quorum" and arguments["x-delivery-limit"] == topology.DELIVERY_LIMIT
        assert arguments["x-dead-letter-exchange"] == topology.DEAD_LETTER_EXCHANGE
        assert arguments["x-dead-letter-strategy"] == "at-least-once" and arguments["x-overflow"] == "reject-publish"
        for attempt in range(1, topology.MAX_RETRIES + 1):
            delay = specs[topology.retry_queue(work.name, attempt)].arguments
            assert delay["x-dead-letter-exchange"] == "" and delay["x-dead-letter-routing-key"] == work.name
        ttls = [specs[topology.retry_queue(work.name, n)].arguments["x-message-ttl"] for n in (1, 2, 3)]
        assert ttls == sorted(ttls) and len(set(ttls)) == 3
    assert specs[topology.DEAD_LETTER_QUEUE].arguments == {"x-queue-type": "classic"}  # peeking loses nothing
    assert names.index(topology.DEAD_LETTER_QUEUE) < names.index("carhub.stock")
    assert topology.queues_for("stock.movement.departure") == ("carhub.stock",)
    assert set(topology.queues_for("payment.succeeded")) == {"carhub.bonus", "carhub.notifications"}


def test_the_committed_definitions_json_matches_the_topology():
    """Regenerate with ``flask topology export`` when this fails."""
    path = Path(__file__).resolve().parent.parent / "deploy" / "rabbitmq" / "definitions.json"
    committed = json.loads(path.read_text())
    expected = topology.definitions("/", "carhub", "carhub")
    for key in ("exchanges", "queues", "bindings", "vhosts", "permissions"):
        assert committed[key] == expected[key], key
    [user] = committed["users"]
    salt = __import__("base64").b64decode(user["password_hash"])[:4]
    assert user["password_hash"] == topology.password_hash("carhub", salt)


def test_the_relay_is_woken_when_the_confirms_it_waits_for_are_in_and_not_before():
    """pika's blocking wait does not see confirms of the underlying channel (see _Confirms)."""
    from types import SimpleNamespace

    import pika

    from messaging.relay import _Confirms

    woken = []
    confirms = _Confirms(wake=lambda: woken.append(True))
    confirms.outstanding = {1, 2, 3, 4}
    confirms.awaited = {1, 2}

    def ack(tag, multiple=False):
        confirms.on_confirm(SimpleNamespace(method=pika.spec.Basic.Ack(delivery_tag=tag, multiple=multiple)))

    ack(1)
    assert woken == []  # tag 2 is still out
    ack(3)
    assert woken == []  # not one of the awaited
    ack(2)
    assert woken == [True] and confirms.outstanding == {4} and confirms.awaited == set()
    confirms.awaited = {4, 5}
    confirms.outstanding |= {5}
    confirms.on_confirm(SimpleNamespace(method=pika.spec.Basic.Nack(delivery_tag=5, multiple=True)))
    assert woken == [True, True] and confirms.nacked == {4, 5}
