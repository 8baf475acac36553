"""Settings from the environment, in one place, with typed defaults.

The same code runs embedded (SQLite, outbox-as-queue, file cache) or on the real
services; only ``DATABASE_URL``, ``RABBITMQ_URL`` and ``REDIS_URL`` choose which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("CARHUB_INSTANCE_DIR", BASE_DIR / "instance"))


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _database_url() -> str:
    url = _env("DATABASE_URL")
    if not url:
        return f"sqlite:///{INSTANCE_DIR / 'carhub.sqlite3'}"
    # Heroku-style URLs and bare postgresql:// both mean psycopg 3 here.
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _cache_config(redis_url: str) -> dict[str, object]:
    if redis_url:
        return {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_url}
    # Embedded: a cache every process on this machine sees the same (gunicorn workers
    # and the consumer), so an invalidation by one is seen by all.
    return {"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": str(INSTANCE_DIR / "cache"), "CACHE_THRESHOLD": 10000}


@dataclass
class Settings:
    """Everything carhub reads from the environment; ``to_flask`` maps it to app.config."""

    database_url: str = field(default_factory=_database_url)
    rabbitmq_url: str = field(default_factory=lambda: _env("RABBITMQ_URL"))
    redis_url: str = field(default_factory=lambda: _env("REDIS_URL"))
    secret_key: str = field(default_factory=lambda: _env("SECRET_KEY", "dev-only-change-me-in-production-0123456789"))
    jwt_expires_seconds: int = field(default_factory=lambda: int(_env("JWT_EXPIRES_SECONDS", "3600")))
    bonus_accrual_rate: Decimal = field(default_factory=lambda: Decimal(_env("BONUS_ACCRUAL_RATE", "0.01")))
    cache_timeout: int = field(default_factory=lambda: int(_env("CACHE_TIMEOUT", "300")))
    cache_key_prefix: str = field(default_factory=lambda: _env("CACHE_KEY_PREFIX", "carhub:"))
    auth_rate_limit: str = field(default_factory=lambda: _env("AUTH_RATE_LIMIT", "20 per minute"))
    admin_email: str = field(default_factory=lambda: _env("CARHUB_ADMIN_EMAIL"))
    admin_password: str = field(default_factory=lambda: _env("CARHUB_ADMIN_PASSWORD"))
    log_level: str = field(default_factory=lambda: _env("LOG_LEVEL", "INFO"))

    def to_flask(self) -> dict[str, object]:
        return {
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options(self.database_url),
            "RABBITMQ_URL": self.rabbitmq_url,
            "REDIS_URL": self.redis_url,
            "JWT_SECRET_KEY": self.secret_key,
            "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=self.jwt_expires_seconds),
            "BONUS_ACCRUAL_RATE": self.bonus_accrual_rate,
            "CACHE_DEFAULT_TIMEOUT": self.cache_timeout,
            "CACHE_KEY_PREFIX": self.cache_key_prefix,
            **_cache_config(self.redis_url),
            "RATELIMIT_STORAGE_URI": self.redis_url or "memory://",
            "RATELIMIT_KEY_PREFIX": self.cache_key_prefix + "ratelimit",
            "AUTH_RATE_LIMIT": self.auth_rate_limit,
            "CARHUB_ADMIN_EMAIL": self.admin_email,
            "CARHUB_ADMIN_PASSWORD": self.admin_password,
            "LOG_LEVEL": self.log_level,
            # OpenAPI, served by flask-smorest from the marshmallow schemas.
            "API_TITLE": "carhub",
            "API_VERSION": "v1",
            "OPENAPI_VERSION": "3.0.3",
            "OPENAPI_URL_PREFIX": "/",
            "OPENAPI_JSON_PATH": "openapi.json",
            "OPENAPI_SWAGGER_UI_PATH": "/docs",
            "OPENAPI_SWAGGER_UI_URL": "https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
            "API_SPEC_OPTIONS": {
                "components": {
                    "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
                },
                "security": [{"bearerAuth": []}],
            },
        }


def engine_options(url: str) -> dict[str, object]:
    """Pool settings for PostgreSQL; a lock wait instead of an error for SQLite."""
    if url.startswith("sqlite"):
        # Several processes share the file: wait for the writer instead of failing.
        return {"connect_args": {"timeout": 30}}
    # No pool_pre_ping: extensions._ping_if_idle pings only connections that sat idle.
    return {"pool_size": 10, "max_overflow": 10}
