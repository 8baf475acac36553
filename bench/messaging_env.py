"""What the messaging benchmarks share: a database, a vhost and an app of their own.

``with backbone() as env:`` creates a PostgreSQL database and a RabbitMQ vhost (both
dropped at the end), an app on them (plus Redis with a prefix of its own) with tables
and the topology, and yields an :class:`Env` with the app and the URLs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pika
from flask import Flask

from tests.backends import REDIS_URL, PostgresDatabase, RabbitVhost


@dataclass
class Env:
    app: Flask
    database_url: str  # postgresql+psycopg://...
    rabbitmq_url: str
    redis_url: str
    cache_prefix: str

    def worker_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "RABBITMQ_URL": self.rabbitmq_url,
            "REDIS_URL": self.redis_url,
            "CACHE_KEY_PREFIX": self.cache_prefix,
            "LOG_LEVEL": "WARNING",
        }


@contextmanager
def backbone() -> Iterator[Env]:
    from app import create_app
    from config import engine_options
    from extensions import db
    from messaging import topology
    from services import reference_data

    database = PostgresDatabase.create()
    vhost = RabbitVhost.create()
    prefix = f"carhub-bench-{uuid.uuid4().hex[:6]}:"
    url = database.url.replace("postgresql://", "postgresql+psycopg://", 1)
    app = None
    try:
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": url,
                "SQLALCHEMY_ENGINE_OPTIONS": engine_options(url),
                "RABBITMQ_URL": vhost.url,
                "REDIS_URL": REDIS_URL,
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": REDIS_URL,
                "CACHE_KEY_PREFIX": prefix,
                "RATELIMIT_STORAGE_URI": "memory://",
                "LOG_LEVEL": "WARNING",
                "PASSWORD_HASH_PROFILE": "fast",
            }
        )
        with app.app_context():
            db.create_all()
            reference_data.seed()
        topology.declare_url(vhost.url)
        yield Env(app, url, vhost.url, REDIS_URL, prefix)
    finally:
        if app is not None:
            with app.app_context():
                db.engine.dispose()
        vhost.drop()
        database.drop()


def purge(url: str, *queues: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in queues:
            channel.queue_purge(name)
    finally:
        connection.close()


def depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def cores() -> str:
    return f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {host_speed()}"


def host_speed() -> str:
    """How fast this host runs plain Python right now: the CPU time of a fixed loop.

    The machines here share their cores with neighbours: on an idle machine this loop
    took from 61 to 127 ms of CPU within a minute (2026-12-01), and every process of a
    benchmark slows down with it. A run's figures compare only with runs taken at a
    similar reference."""
    started = time.process_time()
    total = 0
    for n in range(3_000_000):
        total += n
    return f"reference loop {1000 * (time.process_time() - started):.0f} ms of CPU"
