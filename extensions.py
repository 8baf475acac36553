"""Flask extensions, created once here and bound to the app in ``create_app``."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, current_app, make_response, request
from flask.sessions import SessionInterface
from flask_caching import Cache
from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Engine, MetaData, Pool
from sqlalchemy import event as sa_event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase
from werkzeug.exceptions import TooManyRequests

from schemas.common import ProblemSchema

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("carhub")

# Named constraints let Alembic's batch mode rebuild SQLite tables and let migrations
# drop a constraint by name on PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
cache = Cache()
jwt = JWTManager()


class RateLimiter:
    """Per-client limits on the few views that need them, on the ``limits`` library.

    Flask-Limiter (built on the same library) checks every request in hooks, which cost
    a fifth of a cached read (bench/api.py); carhub limits only sign-up and sign-in, so
    only those pay. The store is Redis when ``RATELIMIT_STORAGE_URI`` names it, so the
    limit holds across workers. If the store is down the request goes through (logged):
    a Redis blip must not lock everybody out of signing in.
    """

    def init_app(self, app: Flask) -> None:
        uri = app.config["RATELIMIT_STORAGE_URI"]
        options = {} if uri.startswith("memory://") else {"key_prefix": app.config["RATELIMIT_KEY_PREFIX"]}
        app.extensions["carhub_rate_limiter"] = FixedWindowRateLimiter(storage_from_string(uri, **options))

    def limit(self, config_key: str) -> Callable[[F], F]:
        """Limit a view to ``app.config[config_key]`` (e.g. "20 per minute") per client address."""

        def decorate(view: F) -> F:
            @wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                item = parse(current_app.config[config_key])
                remaining = self._hit(item, request.endpoint or "", request.remote_addr or "unknown")
                response = make_response(view(*args, **kwargs))
                if remaining is not None:
                    response.headers["X-RateLimit-Limit"] = str(item.amount)
                    response.headers["X-RateLimit-Remaining"] = str(remaining)
                return response

            return wrapper  # type: ignore[return-value]

        return decorate

    def _hit(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Count one request; raise 429 past the limit; None if the store is unreachable."""
        strategy: FixedWindowRateLimiter = current_app.extensions["carhub_rate_limiter"]
        try:
            allowed = strategy.hit(item, *identifiers)
            reset_at, remaining = strategy.get_window_stats(item, *identifiers)
        except Exception:
            log.warning("rate-limit store unreachable; not limiting", exc_info=True)
            return None
        if not allowed:
            raise TooManyRequests(f"at most {item} from one client", retry_after=max(1, int(reset_at - time.time())))
        return remaining


class StatelessSessions(SessionInterface):
    """Bearer tokens, no cookie session: skip opening one on every request."""

    def open_session(self, app: Flask, request: Any) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


limiter = RateLimiter()


class ProblemApi(Api):
    """flask-smorest, documenting errors as the problem+json carhub really returns."""

    ERROR_SCHEMA = ProblemSchema


api = ProblemApi()


@sa_event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    """SQLite: enforce foreign keys, and let readers run beside the one writer (WAL)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


# A pooled connection is pinged only when it sat idle long enough to have died unnoticed
# (a database restart, an idle timeout on the way). pool_pre_ping pinged on every
# checkout: one more round trip per request and per consumer batch, and under load each
# round trip waits for a CPU like the work itself (bench.end_to_end). A connection that
# breaks while in steady use fails its statement, which invalidates the pool, and the
# caller's rules apply (a 503 over HTTP, a retry in the consumer).
IDLE_PING_SECONDS = 1.0


@sa_event.listens_for(Pool, "checkin")
def _note_idle_since(_dbapi_connection: object, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


@sa_event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: object) -> None:
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()
    except Exception as exc:
        raise DisconnectionError("the connection died while idle") from exc  # the pool takes another
