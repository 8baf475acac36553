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
        version = connection._impl.server_properties.get("version", "")
        return {"backend": "rabbitmq", "server": version.decode() if isinstance(version, bytes) else str(version)}
    finally:
        connection.close()


def queue_depths(url: str, names: list[str]) -> dict[str, dict[str, int]]:
    """Ready messages and consumers per queue (passive declares on a short connection)."""
    params = pika.URLParameters(url)
    params.socket_timeout = 2
    params.blocked_connection_timeout = 2
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        depths = {}
        for name in names:
            try:
                frame = channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()  # not declared yet
                continue
            depths[name] = {"messages": frame.method.message_count, "consumers": frame.method.consumer_count}
        return depths
    finally:
        connection.close()
