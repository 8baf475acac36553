"""The baseline: a bare Flask app with one JSON endpoint and nothing else.

It answers ``GET /car`` with a document the size and shape of a carhub car (as
``GET /api/v1/cars/{id}`` returns it), serialised per request, so the difference to
carhub is everything carhub adds: auth, cache lookup, schema, metrics, request ids.
Run it under the same gunicorn settings: ``gunicorn 'bench.bare_app:create_app()'``.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

CAR = {
    "id": "0b0e6f5c-6a3c-4f7e-9a51-3c2f4b8d7e10",
    "vin": "WVWZZZ1JZXW000001",
    "make": "Volkswagen",
    "model": "Golf",
    "year": 2019,
    "license_plate": "B-CH 1234",
    "color": "blue",
    "mileage_km": 42000,
    "price": "15990.00",
    "status": "available",
    "owner_id": None,
    "version": 1,
    "created_at": "2026-11-22T05:00:00.000000Z",
    "updated_at": "2026-11-22T05:00:00.000000Z",
}


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/car")
    def car() -> Response:
        return jsonify(CAR)

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    return app
