"""/health, /stats, /metrics, /docs and /openapi.json."""

from __future__ import annotations

import pytest


def test_health_reports_each_dependency(client, backend):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker"}
    assert body["checks"]["database"]["backend"] == ("sqlite" if backend == "embedded" else "postgresql")
    assert body["checks"]["cache"]["backend"] == ("FileSystemCache" if backend == "embedded" else "RedisCache")
    assert body["checks"]["database"]["outbox_backlog"] == 0


def test_health_is_degraded_when_the_cache_is_down(app):
    from app import create_app

    broken = create_app(
        {
            **{key: app.config[key] for key in app.config if key.isupper()},
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    response = broken.test_client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "ok"


def test_stats_counts_requests_and_cache_lookups_for_staff(staff, customer, anonymous):
    car = staff.post("/api/v1/cars", json={"vin": "WVWZZZ1JZXW000001", "make": "VW", "model": "Golf", "year": 1999})
    before = staff.get("/stats").get_json()
    for _ in range(3):
        customer.get(f"/api/v1/cars/{car.get_json()['id']}")
    after = staff.get("/stats").get_json()
    counted = lambda stats: stats["requests"].get("cars.Car", {}).get("200", 0)  # noqa: E731
    assert counted(after) - counted(before) == 3
    assert after["cache"]["hits"] - before["cache"]["hits"] >= 2
    assert after["events"]["unpublished"] >= 1
    assert customer.get("/stats").status_code == 403
    assert anonymous.get("/stats").status_code == 401


def test_every_answer_is_timed_by_endpoint_and_status(staff, anonymous):
    count = lambda endpoint, status: (  # noqa: E731
        staff.get("/stats").get_json()["requests"].get(endpoint, {}).get(status, 0)
    )
    before = {key: count(*key) for key in [("none", "404"), ("cars.Cars", "401"), ("cars.Cars", "422")]}
    anonymous.get("/api/v1/no-such-thing")
    anonymous.get("/api/v1/cars")
    staff.post("/api/v1/cars", json={"vin": "short"})
    after = {key: count(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == dict.fromkeys(before, 1)


def test_metrics_is_prometheus_text(client):
    client.get("/health")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert "carhub_http_request_duration_seconds_count" in text
    assert "carhub_cache_lookups_total" in text


def test_openapi_is_generated_from_the_schemas(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    car = spec["components"]["schemas"]["Car"]
    assert {"vin", "make", "model", "year"} <= set(car["required"])
    assert "/api/v1/cars/{car_id}" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert b"swagger" in docs.data.lower()


@pytest.mark.parametrize(("idle_ping_seconds", "status"), [(0.0, 200), (1e9, 503)])
def test_a_connection_that_died_while_idle_is_replaced_before_use(
    app, backend, staff, monkeypatch, idle_ping_seconds, status
):
    """The pool pings what sat idle (extensions._ping_if_idle): the request never sees the
    dead connection. Without the ping it would have been a 503, and only that once."""
    if backend == "embedded":
        pytest.skip("a PostgreSQL backend to terminate")
    import psycopg
    from sqlalchemy import text

    import extensions
    from extensions import db

    db.session.remove()
    db.engine.dispose()
    with db.engine.connect() as connection:  # the pool's only connection from here on
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    with psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(False), autocommit=True) as kill:
        kill.execute("SELECT pg_terminate_backend(%s)", (pid,))
    monkeypatch.setattr(extensions, "IDLE_PING_SECONDS", idle_ping_seconds)
    assert staff.get("/api/v1/cars").status_code == status
    assert staff.get("/api/v1/cars").status_code == 200
