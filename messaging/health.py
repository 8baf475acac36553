"""Is the broker reachable? Asked by /health without keeping a connection open."""

from __future__ import annotations

from typing import Any

import pika


def check_broker(url: str) -> dict[str, Any]:
    if not url:
        return {"backend": "embedded (outbox table)"}
    params = pika.URLParameters(url)
    params.socket_timeout = 2
    params.blocked_connection_timeout = 2
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    try:
        return {"backend": "rabbitmq", "server": connection._impl.server_properties.get("version", b"").decode()}
    finally:
        connection.close()
