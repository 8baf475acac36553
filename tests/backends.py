"""The real services the suite runs against, each test session isolated from others.

A session gets its own PostgreSQL database, Redis key prefix and RabbitMQ vhost, so
two suites (a developer's and CI's, or two developers') never see each other's rows
or messages. Where a service cannot be reached the suites that need it are skipped
with the reason, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
import uuid
from base64 import b64encode
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RABBITMQ_MANAGEMENT_URL = os.environ.get("TEST_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")

SESSION_TAG = f"t{os.getpid()}_{uuid.uuid4().hex[:6]}"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class PostgresDatabase:
    url: str
    name: str

    @classmethod
    def create(cls, name: str = f"carhub_{SESSION_TAG}") -> PostgresDatabase:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(PG_ADMIN_URL)
        return cls(url=urlunsplit(parts._replace(path=f"/{name}")), name=name)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@dataclass
class RabbitVhost:
    """A vhost of our own, made through the management API or rabbitmqctl."""

    name: str

    @property
    def url(self) -> str:
        parts = urlsplit(RABBITMQ_URL)
        return urlunsplit(parts._replace(path=f"/{self.name}"))

    @classmethod
    def create(cls) -> RabbitVhost:
        vhost = cls(name=f"carhub-{SESSION_TAG}")
        if management_available():
            management("PUT", f"/api/vhosts/{vhost.name}", {})
            management("PUT", f"/api/permissions/{vhost.name}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        else:
            subprocess.run(["rabbitmqctl", "add_vhost", vhost.name], check=True, capture_output=True)
            subprocess.run(
                ["rabbitmqctl", "set_permissions", "-p", vhost.name, "guest", ".*", ".*", ".*"],
                check=True,
                capture_output=True,
            )
        return vhost

    def drop(self) -> None:
        if management_available():
            management("DELETE", f"/api/vhosts/{self.name}")
        else:
            subprocess.run(["rabbitmqctl", "delete_vhost", self.name], capture_output=True)


def management_available() -> bool:
    return reachable(RABBITMQ_MANAGEMENT_URL, 15672)


def management(method: str, path: str, body: object | None = None) -> object:
    """Call the RabbitMQ management HTTP API (vhost names are URL-quoted by the caller)."""
    parts = urlsplit(RABBITMQ_MANAGEMENT_URL)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}"))
    request = urllib.request.Request(
        base + path, method=method, data=json.dumps(body).encode() if body is not None else None
    )
    token = b64encode(f"{parts.username or 'guest'}:{parts.password or 'guest'}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = response.read()
    return json.loads(payload) if payload else None
