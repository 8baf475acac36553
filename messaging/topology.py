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
            # Beyond EVENTS.md: issue 3 asks that car events notify the car's owner.
            "car.#",
        ),
    ),
)


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


def queues_for(routing_key: str) -> list[str]:
    """The work queues a message with ``routing_key`` reaches on ``carhub.events``."""
    return [queue.name for queue in WORK_QUEUES if any(binding_matches(b, routing_key) for b in queue.bindings)]
