"""Flask extensions, created once here and bound to the app in ``create_app``."""

from __future__ import annotations

import sqlite3

from flask_caching import Cache
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, MetaData
from sqlalchemy import event as sa_event
from sqlalchemy.orm import DeclarativeBase

from schemas.common import ProblemSchema

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
limiter = Limiter(key_func=get_remote_address, default_limits=[])


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
