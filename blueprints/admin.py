"""Operators' view of dead letters: /api/v1/admin/dead-letters."""

from __future__ import annotations

from flask_smorest import Blueprint

blp = Blueprint("admin", __name__, url_prefix="/api/v1/admin", description="Dead letters")
