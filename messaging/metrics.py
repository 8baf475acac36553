"""Message counters, summed across processes by ``observability.sample_totals``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter

MESSAGES = Counter("carhub_messages", "Messages by what happened to them", ["outcome"])

_NAMES = {"done": "consumed", "duplicate": "duplicate", "retry": "retried", "dead": "dead_lettered"}


def count(outcome: str, amount: int = 1) -> None:
    if amount:
        MESSAGES.labels(outcome).inc(amount)


def count_outcomes(outcomes: Iterable[tuple[Any, Any]]) -> None:
    for _, outcome in outcomes:
        count(_NAMES.get(outcome.kind, outcome.kind))
