"""catalogue: business operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# routing key -> handler, for the queue this area consumes (see services/handlers.py)
HANDLERS: dict[str, Callable[[Any], None]] = {}
# event type -> handler that writes notifications
NOTIFICATIONS: dict[str, Callable[[Any], None]] = {}
