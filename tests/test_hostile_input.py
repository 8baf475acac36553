"""Whatever a client sends, on any route: a 4xx problem, never a 500, nothing half-stored.

PostgreSQL refuses a NUL character in text and a number beyond bigint where SQLite
takes both, so these sweeps matter most on the real backend.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from extensions import db
from models.cars import Car
from models.tickets import Ticket

NUL = "%00"
HUGE = str(10**20)


def routes(app):
    """Every carhub route and method, path parameters filled with a NUL-bearing value."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint in {"static", "api-docs.openapi_swagger_ui", "api-docs.openapi_json"}:
            continue
        path = re.sub(r"<(?:[a-z]+:)?[a-z_]+>", f"bad{NUL}id", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path


def test_a_nul_in_any_path_parameter_is_a_client_error(app, admin):
    answers = {}
    for method, path in routes(app):
        if NUL not in path:
            continue
        response = admin.request(method, path, json={} if method in {"POST", "PUT", "PATCH"} else None)
        answers[f"{method} {path}"] = response.status_code
    assert answers and all(400 <= status < 500 for status in answers.values()), answers


def test_a_page_beyond_any_list_is_422_on_every_list(app, admin):
    answers = {}
    for method, path in routes(app):
        if method == "GET" and NUL not in path:
            response = admin.get(f"{path}?page={HUGE}")
            assert response.status_code < 500, path
            paged = response.status_code == 422 or "page" in (response.get_json(silent=True) or {})
            if paged:
                answers[path] = response.status_code
    assert len(answers) >= 10, answers  # every paged list, found by its answer
    assert {path for path, status in answers.items() if status != 422} == set()


@pytest.mark.parametrize(
    "query",
    [
        f"/api/v1/cars?make=a{NUL}b",
        f"/api/v1/cars?q=a{NUL}b",
        f"/api/v1/tickets?user_name=a{NUL}b",
        f"/api/v1/fines?license_plate=a{NUL}b",
        f"/api/v1/stock/items?sku=a{NUL}b",
        f"/api/v1/orders?status=a{NUL}b",
        f"/api/v1/admin/dead-letters?queue=a{NUL}b",
    ],
)
def test_a_nul_in_a_filter_is_a_client_error(app, admin, query):
    response = admin.get(query)
    assert 400 <= response.status_code < 500, response.get_json()
    assert response.content_type == "application/problem+json"


def test_a_nul_in_a_body_stores_nothing(app, staff, customer):
    car = {"vin": "1HGCM82633A004352", "make": "Lada\u0000", "model": "Vesta", "year": 2020}
    assert 400 <= staff.post("/api/v1/cars", json=car).status_code < 500
    ticket = {"subject": "brakes\u0000", "description": "squeak"}
    assert 400 <= customer.post("/api/v1/tickets", json=ticket).status_code < 500
    assert db.session.scalar(select(func.count()).select_from(Car)) == 0
    assert db.session.scalar(select(func.count()).select_from(Ticket)) == 0
    # and the next request on the same worker is served normally
    assert staff.post("/api/v1/cars", json={**car, "make": "Lada"}).status_code == 201
