"""One row inserted by one Core statement, for the create paths that run hottest.

The ORM unit of work around a single new object (state tracking, dependency sort, a
bind lookup per object) cost more than the INSERT it emits: a sixth of a POST /cars.
A create that needs no relationship loaded back can do without it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, inspect

from extensions import db


def insert_row(model: type[db.Model], values: dict[str, Any]) -> dict[str, Any]:
    """INSERT ``values`` as a new ``model`` row in the session's transaction; return
    every column of it, with the defaults the ORM would have applied (Python-side column
    defaults, the first version of a versioned model). Constraint errors raise here."""
    mapper = inspect(model)
    table = mapper.local_table
    values = dict(values)
    if mapper.version_id_col is not None and mapper.version_id_generator:
        values.setdefault(mapper.version_id_col.key, mapper.version_id_generator(None))
    params = db.session.connection().execute(insert(table), values).last_inserted_params()
    return {column.key: params.get(column.key) for column in table.columns}
