"""Fixtures: the app on each backend, clients, users and tokens.

``backend`` is ``embedded`` (SQLite file, file cache, no broker) or ``real``
(PostgreSQL + Redis of this machine). API tests take the ``app`` fixture and run on
both. Broker tests use the ``rabbitmq`` fixture (a vhost of their own).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import engine_options
from tests import backends

_skipped: dict[str, str] = {}


def _unavailable(what: str, reason: str) -> None:
    if backends.IN_CI:
        pytest.fail(f"{what} is required in CI but {reason}", pytrace=False)
    _skipped[what] = reason
    pytest.skip(f"{what}: {reason}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if not backends.reachable(backends.PG_ADMIN_URL, 5432):
        _unavailable("PostgreSQL", f"nothing answers at {backends.PG_ADMIN_URL}")
    database = backends.PostgresDatabase.create()
    yield database.url
    database.drop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not backends.reachable(backends.REDIS_URL, 6379):
        _unavailable("Redis", f"nothing answers at {backends.REDIS_URL}")
    return backends.REDIS_URL


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    if not backends.reachable(backends.RABBITMQ_URL, 5672):
        _unavailable("RabbitMQ", f"nothing answers at {backends.RABBITMQ_URL}")
    vhost = backends.RabbitVhost.create()
    yield vhost.url
    vhost.drop()


@pytest.fixture(scope="session")
def tmp_instance() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="carhub-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(backend: str, request: pytest.FixtureRequest, instance: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "TESTING": True,
        "PASSWORD_HASH_PROFILE": "fast",
        "AUTH_RATE_LIMIT": "1000 per second",
        "CACHE_KEY_PREFIX": f"carhub-{backends.SESSION_TAG}-{backend}:",
    }
    if backend == "embedded":
        config.update(
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{instance / 'carhub.sqlite3'}",
            SQLALCHEMY_ENGINE_OPTIONS=engine_options("sqlite://"),
            CACHE_TYPE="FileSystemCache",
            CACHE_DIR=str(instance / "cache"),
            RATELIMIT_STORAGE_URI="memory://",
            RABBITMQ_URL="",
        )
    else:
        postgres = request.getfixturevalue("postgres_url").replace("postgresql://", "postgresql+psycopg://", 1)
        redis = request.getfixturevalue("redis_url")
        config.update(
            SQLALCHEMY_DATABASE_URI=postgres,
            SQLALCHEMY_ENGINE_OPTIONS=engine_options(postgres),
            CACHE_TYPE="RedisCache",
            CACHE_REDIS_URL=redis,
            RATELIMIT_STORAGE_URI=redis,
            REDIS_URL=redis,
            RABBITMQ_URL="",
        )
    return config


@pytest.fixture(scope="session", params=["embedded", "real"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def _apps() -> dict[str, Flask]:
    return {}


@pytest.fixture
def app(backend: str, request: pytest.FixtureRequest, tmp_instance: Path, _apps: dict[str, Flask]) -> Iterator[Flask]:
    """A clean app on ``backend``: tables emptied and cache cleared before each test."""
    from app import create_app
    from extensions import cache, db

    if backend not in _apps:
        instance = tmp_instance / backend
        instance.mkdir(exist_ok=True)
        created = create_app(_config(backend, request, instance))
        with created.app_context():
            db.create_all()
        _apps[backend] = created
    flask_app = _apps[backend]
    with flask_app.app_context():
        _empty_tables()
        cache.clear()
        yield flask_app
        db.session.remove()


def _empty_tables() -> None:
    from extensions import db
    from services import reference_data

    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(f'"{table.name}"' for table in db.metadata.sorted_tables)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        else:
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
    reference_data.seed()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Api:
    """A test client that signs in as someone and speaks JSON."""

    def __init__(self, client: FlaskClient, token: str | None = None, user: dict[str, Any] | None = None) -> None:
        self.client, self.token, self.user = client, token, user

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        merged = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        merged.update(headers or {})
        return merged

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.client.open(url, method=method, headers=self._headers(kwargs.pop("headers", None)), **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, headers=self._headers(kwargs.pop("headers", None)), **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self.client.delete(url, headers=self._headers(kwargs.pop("headers", None)), **kwargs)

    def post(self, url: str, json: Any = None, **kwargs: Any) -> Any:
        return self.client.post(url, json=json, headers=self._headers(kwargs.pop("headers", None)), **kwargs)

    def put(self, url: str, json: Any = None, **kwargs: Any) -> Any:
        return self.client.put(url, json=json, headers=self._headers(kwargs.pop("headers", None)), **kwargs)

    def patch(self, url: str, json: Any = None, **kwargs: Any) -> Any:
        return self.client.patch(url, json=json, headers=self._headers(kwargs.pop("headers", None)), **kwargs)


def make_user(client: FlaskClient, role: str = "customer", email: str | None = None, name: str = "Test User") -> Api:
    """Create a user with ``role`` directly in the service layer and sign in over HTTP."""
    import uuid

    from services import users

    email = email or f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    user = users.create_user(email, "correct-horse-battery", name, role=role)
    response = client.post("/api/v1/auth/login", json={"email": email, "password": "correct-horse-battery"})
    assert response.status_code == 200, response.get_json()
    return Api(client, response.get_json()["access_token"], {"id": user.id, "email": email, "role": role})


@pytest.fixture
def anonymous(client: FlaskClient) -> Api:
    return Api(client)


@pytest.fixture
def customer(client: FlaskClient) -> Api:
    return make_user(client, "customer", name="Carla Customer")


@pytest.fixture
def other_customer(client: FlaskClient) -> Api:
    return make_user(client, "customer", name="Oscar Other")


@pytest.fixture
def staff(client: FlaskClient) -> Api:
    return make_user(client, "staff", name="Stan Staff")


@pytest.fixture
def admin(client: FlaskClient) -> Api:
    return make_user(client, "admin", name="Ada Admin")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.section("suites skipped")
        for what, reason in _skipped.items():
            terminalreporter.write_line(f"{what} suites were skipped: {reason} (start it to run them)")


# --- the event backbone: an app on the broker, the real worker, waiting ----------------
#
# End-to-end tests over RabbitMQ look like this (mark them broker + slow):
#
#     @pytest.mark.broker
#     @pytest.mark.slow
#     def test_something(broker_app, broker_client, start_worker, wait_until):
#         start_worker(broker_app)                      # python consumer.py --single
#         user = make_user(broker_client, "customer")
#         user.post("/api/v1/...", json={...})          # commits rows + outbox
#         wait_until(lambda: <effect visible in the database>, message="the effect")
#
# ``start_worker(app)`` also works with the embedded ``app`` fixture (no broker: the
# worker reads the outbox table); in-process, ``tests.messaging_helpers.drain_outbox``
# stays the quickest way to run consumers inside an ordinary API test.


def wait_until(condition: Any, timeout: float = 20.0, interval: float = 0.05, message: str = "the condition") -> Any:
    """Poll ``condition()`` until it returns something truthy (returned), else fail.

    Call it with the app context you assert in; it ends the session's transaction
    before each poll so every poll sees what other processes committed.
    """
    import contextlib
    import time

    from extensions import db

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(RuntimeError):  # no app context: the condition needs no session
            db.session.rollback()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Any:
    """``wait_until(condition, timeout=20, message=...)``: poll with a deadline."""
    return wait_until


def purge_queues(url: str) -> None:
    """Empty every carhub queue of the test vhost (work, delay and dead-letter queues)."""
    import pika

    from messaging import topology

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        topology.declare(channel)
        for name in topology.all_queue_names():
            channel.queue_purge(name)
    finally:
        connection.close()


@pytest.fixture(scope="session")
def _broker_flask_app(request: pytest.FixtureRequest, rabbitmq_url: str, tmp_instance: Path) -> Flask:
    from app import create_app
    from extensions import db
    from messaging import topology

    instance = tmp_instance / "broker"
    instance.mkdir(exist_ok=True)
    config = _config("real", request, instance)
    config.update(RABBITMQ_URL=rabbitmq_url, CACHE_KEY_PREFIX=f"carhub-{backends.SESSION_TAG}-broker:")
    created = create_app(config)
    with created.app_context():
        db.create_all()
    topology.declare_url(rabbitmq_url)
    return created


@pytest.fixture
def broker_app(_broker_flask_app: Flask) -> Iterator[Flask]:
    """An app on PostgreSQL + Redis + RabbitMQ (this session's vhost), topology declared.

    Before each test: tables emptied (reference data re-seeded), cache cleared, every
    carhub queue purged. ``RABBITMQ_URL`` is in its config; the web side still only
    writes the outbox — start the worker (``start_worker``) to relay and consume.
    """
    from extensions import cache, db

    with _broker_flask_app.app_context():
        _empty_tables()
        cache.clear()
        purge_queues(_broker_flask_app.config["RABBITMQ_URL"])
        yield _broker_flask_app
        db.session.remove()


@pytest.fixture
def broker_client(broker_app: Flask) -> FlaskClient:
    """A test client of ``broker_app``; sign users in with ``make_user(broker_client, role)``."""
    return broker_app.test_client()


class WorkerProcess:
    """The real worker (``consumer.py``) as a subprocess, configured like a test app.

    ``supervised=False`` (default) runs ``consumer.py --single``: ``kill()`` is a real
    SIGKILL of the worker. ``supervised=True`` runs the supervisor, which restarts its
    worker child when that dies. ``stop()`` sends SIGTERM and waits (clean shutdown).
    """

    def __init__(self, app: Flask, supervised: bool = False, env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys

        config = app.config
        environment = dict(os.environ)
        environment.update(
            DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"],
            RABBITMQ_URL=config.get("RABBITMQ_URL") or "",
            REDIS_URL=config.get("REDIS_URL") or "",
            CACHE_KEY_PREFIX=config["CACHE_KEY_PREFIX"],
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        if config.get("CACHE_DIR"):  # embedded: the same file cache as the test app
            environment["CARHUB_INSTANCE_DIR"] = str(Path(config["CACHE_DIR"]).parent)
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        environment.update(env or {})
        root = Path(__file__).resolve().parent.parent
        self.log_path = Path(tempfile.mkstemp(prefix="carhub-worker-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        command = [sys.executable, str(root / "consumer.py")] + ([] if supervised else ["--single"])
        self.process = subprocess.Popen(command, cwd=root, env=environment, stdout=self._log, stderr=self._log)
        self.pid = self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        """Wait until the worker consumes (RabbitMQ) or polls the outbox (embedded)."""
        wait_until(
            lambda: "consuming carhub." in self.output() or "embedded worker started" in self.output(),
            timeout=timeout,
            message=f"the worker to start:\n{self.output()[-3000:]}",
        )
        return self

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acks, no goodbyes."""
        import signal

        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait: in-flight work finishes, then the process exits."""
        import signal

        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=timeout)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_worker() -> Iterator[Any]:
    """``start_worker(app, supervised=False, env=None, ready=True) -> WorkerProcess``.

    Starts ``consumer.py`` with ``app``'s database, broker, Redis and cache prefix
    (``broker_app`` for RabbitMQ, the embedded ``app`` for the outbox-table mode);
    waits until it consumes unless ``ready=False``. Every worker is stopped after the
    test (SIGTERM, then SIGKILL).

    To SIGKILL a worker between its commit and its ack, start it with
    ``env={"CARHUB_TEST_ACK_DELAY_SECONDS": "30"}``: after each commit it logs
    "acking in" and waits that long before acking; wait for the effect (or for
    ``"acking in" in worker.output()``), then ``worker.kill()``.
    """
    started: list[WorkerProcess] = []

    def start(app: Flask, supervised: bool = False, env: dict[str, str] | None = None, ready: bool = True) -> Any:
        worker = WorkerProcess(app, supervised=supervised, env=env)
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        try:
            worker.stop(timeout=20)
        except Exception:  # noqa: BLE001
            worker.kill()
