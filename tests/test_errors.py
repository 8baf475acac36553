"""Every error a client can provoke is application/problem+json, never HTML or a traceback."""

from __future__ import annotations

import pytest
from flask_jwt_extended import create_access_token

from app import create_app


def assert_problem(response, status):
    assert response.status_code == status
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_unknown_route_is_404(client):
    assert_problem(client.get("/api/v1/nothing-here"), 404)


def test_wrong_method_is_405_with_allow(client):
    response = client.delete("/api/v1/auth/login")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_malformed_json_is_400(client):
    response = client.post("/api/v1/auth/register", data="{not json", content_type="application/json")
    assert_problem(response, 400)


def test_json_that_is_not_an_object_is_422(client):
    assert_problem(client.post("/api/v1/auth/register", json=[1, 2, 3]), 422)


def test_missing_fields_are_422_with_each_field(client):
    body = assert_problem(client.post("/api/v1/auth/register", json={}), 422)
    assert set(body["errors"]) == {"email", "password", "full_name"}


def test_request_id_is_echoed_or_made(client):
    assert client.get("/health").headers["X-Request-ID"]
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    problem = client.get("/api/v1/nothing", headers={"X-Request-ID": "req-9"}).get_json()
    assert problem["request_id"] == "req-9"


def _fresh_app(app, **overrides):
    return create_app({**{key: app.config[key] for key in app.config if key.isupper()}, **overrides})


def test_rate_limit_is_429_with_retry_after(app):
    limited = _fresh_app(app, AUTH_RATE_LIMIT="2 per minute", RATELIMIT_STORAGE_URI="memory://")
    client = limited.test_client()
    body = {"email": "x@example.com", "password": "whatever-long"}
    statuses = [client.post("/api/v1/auth/login", json=body).status_code for _ in range(3)]
    assert statuses[:2] == [401, 401]
    response = client.post("/api/v1/auth/login", json=body)
    assert_problem(response, 429)
    assert int(response.headers["Retry-After"]) > 0


def test_unexpected_error_is_a_500_problem_without_details(app):
    broken = _fresh_app(app, PROPAGATE_EXCEPTIONS=False, TESTING=False)

    @broken.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = broken.test_client().get("/boom", headers={"X-Request-ID": "boom-1"})
    body = assert_problem(response, 500)
    assert "secret internals" not in response.get_data(as_text=True)
    assert body["request_id"] == response.headers["X-Request-ID"] == "boom-1"
    assert body["title"] == "Internal server error"  # our handler answered, not a fallback after it failed


def test_a_request_id_that_is_too_long_or_unprintable_is_replaced(client):
    for bad in ("x" * 65, "tab\there"):
        made = client.get("/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert made != bad and len(made) == 32


def test_log_lines_of_a_request_carry_its_id(app):
    import logging

    from tracing import RequestIdFilter

    broken = _fresh_app(app, PROPAGATE_EXCEPTIONS=False, TESTING=False)

    @broken.get("/boom")
    def boom():
        raise RuntimeError("logged")

    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.addFilter(RequestIdFilter())
    handler.emit = seen.append
    logging.getLogger("carhub").addHandler(handler)
    try:
        broken.test_client().get("/boom", headers={"X-Request-ID": "log-me-7"})
    finally:
        logging.getLogger("carhub").removeHandler(handler)
    assert [record.request_id for record in seen] == ["log-me-7"]


@pytest.fixture
def app_with_dead_database(app):
    dead = _fresh_app(
        app,
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 1}},
    )
    with dead.app_context():
        yield dead


def test_database_down_is_503_with_retry_after(app_with_dead_database):
    client = app_with_dead_database.test_client()
    token = create_access_token(identity="00000000-0000-4000-8000-000000000000", additional_claims={"role": "staff"})
    response = client.get("/api/v1/cars", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 503)
    assert response.headers["Retry-After"]
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["status"] == "down"
