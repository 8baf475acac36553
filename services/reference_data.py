"""Rows that exist from the start (the ``main`` warehouse, the catalogue, ...).

Run by ``flask seed`` after migrations (``make run``, compose's migrate job) and by
the tests after they empty the tables. Idempotent: each area adds its seeder here.
"""

from __future__ import annotations

from collections.abc import Callable

from extensions import db
from services import catalogue, stock

SEEDERS: list[Callable[[], None]] = [stock.seed_main_warehouse, catalogue.seed_catalogue]


def seed() -> None:
    for seeder in SEEDERS:
        seeder()
    db.session.commit()
