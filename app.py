"""The carhub web application: ``create_app()`` builds it (``gunicorn 'app:create_app()'``)."""

from __future__ import annotations

import logging
from typing import Any

from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, Response, json
from marshmallow import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

import cli
import models  # noqa: F401 - every table on the metadata
from blueprints import (
    admin,
    auth,
    bonuses,
    cars,
    cart,
    catalogue,
    fines,
    notifications,
    operations,
    orders,
    payments,
    stock,
    tickets,
)
from config import INSTANCE_DIR, Settings
from extensions import StatelessSessions, api, cache, db, jwt, limiter, migrate
from observability import init_metrics
from schemas.common import schema_name
from services.errors import DomainError
from tracing import RequestIdMiddleware, configure_logging, request_id_var

log = logging.getLogger("carhub")

BLUEPRINTS = (auth, cars, stock, tickets, orders, catalogue, payments, bonuses, fines, cart, notifications, admin)
PROBLEM_JSON = "application/problem+json"


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``overrides`` replace config keys (tests)."""
    settings = Settings()
    app = Flask(__name__, instance_path=str(INSTANCE_DIR))
    app.config.update(settings.to_flask())
    app.config.update(overrides or {})
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    configure_logging(app.config["LOG_LEVEL"])
    app.json.sort_keys = False
    app.session_interface = StatelessSessions()

    db.init_app(app)
    migrate.init_app(app, db, render_as_batch=True, compare_type=True)
    cache.init_app(app)
    jwt.init_app(app)
    limiter.init_app(app)
    api.init_app(app, spec_kwargs={"marshmallow_plugin": MarshmallowPlugin(schema_name_resolver=schema_name)})
    for module in BLUEPRINTS:
        api.register_blueprint(module.blp)
    app.register_blueprint(operations.blp)
    init_metrics(app)
    cli.register(app)

    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)
    _register_error_handlers(app)
    return app


def problem(status: int, title: str, detail: str = "", **extra: Any) -> Response:
    """An RFC 9457 problem document."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail or title}
    body.update({key: value for key, value in extra.items() if value is not None})
    body["request_id"] = request_id_var.get()
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(error: DomainError) -> Response:
        if error.status >= 500:
            db.session.rollback()
        return problem(error.status, error.title, error.detail, errors=error.errors)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = problem(status, error.name, error.description or "", errors=_field_errors(error))
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            value = error.get_response().headers.get(header)
            if value:
                response.headers[header] = value
        if status == 429:
            response.headers.setdefault("Retry-After", "60")
        return response

    @app.errorhandler(ValidationError)
    def validation_error(error: ValidationError) -> Response:
        return problem(422, "Unprocessable entity", "some fields are invalid", errors=_flatten(error.messages))

    @app.errorhandler(OperationalError)
    def database_down(error: OperationalError) -> Response:
        log.error("database unavailable: %s", error)
        db.session.rollback()
        response = problem(503, "Service unavailable", "the database is unavailable; try again shortly")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(DataError)
    def unstorable_value(error: DataError) -> Response:
        # A value the database refuses as data (a NUL character, a number out of range):
        # the client's input, so a 400, and nothing of the request is kept.
        log.warning("value refused by the database: %s", error.orig)
        db.session.rollback()
        return problem(400, "Bad request", "a value in the request cannot be stored or searched for")

    @app.errorhandler(DBAPIError)
    def database_error(error: DBAPIError) -> Response:
        log.exception("database error")
        db.session.rollback()
        return problem(500, "Internal server error", "the request could not be completed")

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return problem(500, "Internal server error", "the request could not be completed")

    # Every JWT failure is a 401 problem too.
    def unauthorized(reason: str) -> Response:
        response = problem(401, "Unauthorized", reason)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    jwt.unauthorized_loader(unauthorized)
    jwt.invalid_token_loader(unauthorized)
    jwt.expired_token_loader(lambda _header, _payload: unauthorized("the token has expired"))
    jwt.revoked_token_loader(lambda _header, _payload: unauthorized("the token has been revoked"))
    jwt.needs_fresh_token_loader(lambda _header, _payload: unauthorized("a fresh token is needed"))
    jwt.user_lookup_error_loader(lambda _header, _payload: unauthorized("the user no longer exists"))


def _field_errors(error: HTTPException) -> dict[str, list[str]] | None:
    """webargs puts ``{location: {field: [messages]}}`` on 422s; flatten the location."""
    messages = getattr(error, "data", {}).get("messages") if hasattr(error, "data") else None
    if not messages:
        return None
    flat: dict[str, list[str]] = {}
    for fields_ in messages.values():
        flat.update(_flatten(fields_))
    return flat


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Nested marshmallow messages as ``{"services.0.qty": [...]}``."""
    if isinstance(messages, list):
        if all(isinstance(item, str) for item in messages):
            return {prefix or "_schema": messages}
        messages = dict(enumerate(messages))
    if not isinstance(messages, dict):
        return {prefix or "_schema": [str(messages)]}
    flat: dict[str, list[str]] = {}
    for key, value in messages.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
