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
