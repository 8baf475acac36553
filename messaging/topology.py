"""The one topology: exchanges, queues, bindings, dead-letter and retry arguments.

Declared by the relay, the consumer, ``flask topology declare`` and the tests alike,
exported as ``definitions.json`` for compose, and used by the embedded transport to
route outbox rows to queues exactly as the topic exchange would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

EVENTS_EXCHANGE = "carhub.events"
DEAD_LETTER_EXCHANGE = "carhub.dlx"
DEAD_LETTER_QUEUE = "carhub.dead-letters"


@dataclass(frozen=True)
class WorkQueue:
    name: str
    bindings: tuple[str, ...]


WORK_QUEUES: tuple[WorkQueue, ...] = (
    WorkQueue("carhub.stock", ("stock.command.#", "stock.movement.#")),
    WorkQueue("carhub.bonus", ("payment.succeeded", "payment.refunded")),
    WorkQueue(
        "carhub.notifications",
        (
            "ticket.#",
            "order.#",
            "bonus.accrued",
            "stock.command.rejected",
            "payment.succeeded",
            # Beyond EVENTS.md: issue 3 asks that car events notify the car's owner; the
            # owner of a fined plate and of a reversed bonus want to hear of it too.
            "car.#",
            "fine.issued",
            "bonus.reversed",
        ),
    ),
)

# Events carhub publishes for whoever subscribes (a storefront, a dashboard, an outside
# warehouse) that no carhub queue consumes. The relay publishes them without
# ``mandatory``: with no subscriber the broker drops them, as publish/subscribe means.
# Every other event must reach a queue; if it cannot, it stays in the outbox and
# /health says so (a missing binding is a bug, not something to drop silently).
BROADCAST_EVENTS = frozenset({"stock.changed", "fine.paid"})


@cache
def _pattern(binding: str) -> re.Pattern[str]:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    words = binding.split(".")
    if words == ["#"]:
        return re.compile(r"^.*$")
    regex = ""
    for index, word in enumerate(words):
        if word == "#":
            regex += r"(?:[^.]+\.)*" if index == 0 else r"(?:\.[^.]+)*"
            continue
        piece = r"[^.]+" if word == "*" else re.escape(word)
        regex += piece if index == 0 or (index == 1 and words[0] == "#") else r"\." + piece
    return re.compile(rf"^{regex}$")


def binding_matches(binding: str, routing_key: str) -> bool:
    return bool(_pattern(binding).match(routing_key))


@cache
def queues_for(routing_key: str) -> tuple[str, ...]:
    """The work queues a message with ``routing_key`` reaches on ``carhub.events``."""
    return tuple(queue.name for queue in WORK_QUEUES if any(binding_matches(b, routing_key) for b in queue.bindings))


def must_be_routed(routing_key: str) -> bool:
    """Whether a message no queue takes is an error (see ``BROADCAST_EVENTS``)."""
    return routing_key not in BROADCAST_EVENTS or bool(queues_for(routing_key))


# --- arguments, retries, dead letters ------------------------------------------------
#
# Work queues are quorum queues with an explicit delivery limit (3.10 has none by
# default; 4.x defaults to 20) and at-least-once dead-lettering (needs reject-publish
# overflow), so a message that crash-loops a consumer reaches carhub.dlx instead of
# being dropped. The consumer itself dead-letters poison messages at once (publishing
# to carhub.dlx with x-carhub-error / x-carhub-failed-queue) and retries transient
# failures through one delay queue per delay value (per-queue TTL only expires at the
# head, so one TTL per queue), which dead-letters back to the work queue through the
# default exchange: a retry never reaches the other subscribers of the routing key.

DELIVERY_LIMIT = 10
RETRY_DELAYS_MS: tuple[int, ...] = (1_000, 5_000, 30_000)
MAX_RETRIES = len(RETRY_DELAYS_MS)  # after the last delay, a failure dead-letters

# Headers carhub sets on the messages it moves around.
ATTEMPT_HEADER = "x-carhub-attempt"  # how many times processing failed transiently
ROUTING_KEY_HEADER = "x-carhub-routing-key"  # the original routing key (retries, replays)
ERROR_HEADER = "x-carhub-error"
FAILED_QUEUE_HEADER = "x-carhub-failed-queue"
DEAD_LETTER_ID_HEADER = "x-carhub-dead-letter-id"

# carhub.dlx fans out to the queue operators inspect (classic: "Get messages" in the
# management UI requeues in place and nothing counts deliveries, so looking loses
# nothing, on 3.10 and 4.x alike) and to the queue the worker copies into the
# dead_letters table that GET /api/v1/admin/dead-letters and replay read.
DEAD_LETTER_LOG_QUEUE = "carhub.dead-letters.log"


def retry_queue(queue: str, attempt: int) -> str:
    """The delay queue for the ``attempt``-th retry (1-based) of ``queue``."""
    delay = RETRY_DELAYS_MS[min(attempt, MAX_RETRIES) - 1]
    return f"{queue}.retry.{_delay_label(delay)}"


def _delay_label(delay_ms: int) -> str:
    return f"{delay_ms // 1000}s" if delay_ms % 1000 == 0 else f"{delay_ms}ms"


def retry_delay_seconds(attempt: int) -> float:
    return RETRY_DELAYS_MS[min(attempt, MAX_RETRIES) - 1] / 1000


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, binding key)


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    arguments: dict


def exchanges() -> list[ExchangeSpec]:
    return [
        ExchangeSpec(DEAD_LETTER_EXCHANGE, "fanout", {}),
        ExchangeSpec(EVENTS_EXCHANGE, "topic", {}),
    ]


def queues() -> list[QueueSpec]:
    """Every queue, in declaration order: dead-letter targets before their sources."""
    specs = [
        QueueSpec(DEAD_LETTER_QUEUE, {"x-queue-type": "classic"}, ((DEAD_LETTER_EXCHANGE, ""),)),
        QueueSpec(DEAD_LETTER_LOG_QUEUE, {"x-queue-type": "classic"}, ((DEAD_LETTER_EXCHANGE, ""),)),
    ]
    for work in WORK_QUEUES:
        specs.append(
            QueueSpec(
                work.name,
                {
                    "x-queue-type": "quorum",
                    "x-delivery-limit": DELIVERY_LIMIT,
                    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
                tuple((EVENTS_EXCHANGE, key) for key in work.bindings),
            )
        )
        for delay in RETRY_DELAYS_MS:
            specs.append(
                QueueSpec(
                    f"{work.name}.retry.{_delay_label(delay)}",
                    {
                        "x-queue-type": "quorum",
                        "x-message-ttl": delay,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": work.name,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    },
                )
            )
    return specs


def declare(channel: object) -> None:
    """Declare everything idempotently on a pika ``BlockingChannel``."""
    for exchange in exchanges():
        channel.exchange_declare(exchange.name, exchange.type, durable=True, arguments=exchange.arguments or None)
    for queue in queues():
        channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
        for exchange, key in queue.bindings:
            channel.queue_bind(queue.name, exchange, routing_key=key)


def declare_url(url: str) -> None:
    """Connect to ``url``, declare the topology, disconnect."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        declare(connection.channel())
    finally:
        connection.close()


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    import base64
    import hashlib
    import os

    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(vhost: str = "/", user: str | None = None, password: str = "") -> dict:
    """The topology as a RabbitMQ ``definitions.json`` (management import / load_definitions).

    With ``user``, the file also defines that user (administrator, so the management UI
    works) and its permissions on ``vhost``: RabbitMQ creates no default user when it
    imports definitions at boot.
    """
    users = []
    permissions = []
    if user:
        users.append(
            {
                "name": user,
                "password_hash": password_hash(password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ["administrator"],
                "limits": {},
            }
        )
        permissions.append({"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"})
    return {
        "rabbit_version": "3.10.8",
        "users": users,
        "vhosts": [{"name": vhost}],
        "permissions": permissions,
        "exchanges": [
            {
                "name": exchange.name,
                "vhost": vhost,
                "type": exchange.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": exchange.arguments,
            }
            for exchange in exchanges()
        ],
        "queues": [
            {"name": queue.name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": queue.arguments}
            for queue in queues()
        ],
        "bindings": [
            {
                "source": exchange,
                "vhost": vhost,
                "destination": queue.name,
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {},
            }
            for queue in queues()
            for exchange, key in queue.bindings
        ],
    }


def all_queue_names() -> list[str]:
    return [queue.name for queue in queues()]
