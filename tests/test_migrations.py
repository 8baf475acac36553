"""Migrations build exactly the schema the models declare, and come down again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from app import create_app
from config import engine_options
from extensions import db
from tests import backends


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    request.getfixturevalue("postgres_url")  # skips (or fails in CI) without PostgreSQL
    database = backends.PostgresDatabase.create(f"carhub_mig_{uuid.uuid4().hex[:8]}")
    try:
        yield database.url.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        database.drop()


def test_upgrade_matches_models_and_downgrade_empties(empty_database):
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": empty_database, "SQLALCHEMY_ENGINE_OPTIONS": engine_options(empty_database)}
    )
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True, "render_as_batch": True})
            differences = compare_metadata(context, db.metadata)
        assert differences == [], f"models and migrations disagree: {differences}"
        assert set(db.metadata.tables) <= set(inspect(db.engine).get_table_names())
        if db.engine.dialect.name == "postgresql":  # the relay's doorbell (models.messaging)
            triggers = db.session.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).all()
            assert triggers == ["outbox_notify"]
            db.session.rollback()

        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()
