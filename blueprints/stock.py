"""stock over HTTP."""

from __future__ import annotations

from flask_smorest import Blueprint

blp = Blueprint("stock", __name__, url_prefix="/api/v1", description="stock")
