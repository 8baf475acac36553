"""Operators' view of dead letters: /api/v1/admin/dead-letters."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from blueprints.common import Blueprint, auth_required
from messaging import deadletters
from schemas.admin import DeadLetterArgsSchema, DeadLetterSchema
from schemas.common import page_of
from services.errors import Conflict, NotFound

blp = Blueprint("admin", __name__, url_prefix="/api/v1/admin", description="Dead letters")


@blp.route("/dead-letters")
class DeadLetters(MethodView):
    @auth_required("admin")
    @blp.arguments(DeadLetterArgsSchema, location="query")
    @blp.response(200, page_of(DeadLetterSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Messages that could not be applied, newest first (``?queue=`` to filter)."""
        items, total = deadletters.list_dead_letters(args["page"], args["size"], args.get("queue"))
        return {"items": [deadletters.as_dict(item) for item in items], **args, "total": total}


@blp.route("/dead-letters/<dead_letter_id>/replay")
class ReplayDeadLetter(MethodView):
    @auth_required("admin")
    @blp.response(202, DeadLetterSchema)
    def post(self, dead_letter_id: str) -> dict[str, Any]:
        """Send the message to the queue that failed it again, under its original routing key."""
        try:
            return deadletters.as_dict(deadletters.replay(dead_letter_id))
        except deadletters.DeadLetterNotFound as exc:
            raise NotFound(f"dead letter {dead_letter_id} not found") from exc
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
