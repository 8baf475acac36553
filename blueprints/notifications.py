"""A user's notifications: /api/v1/notifications."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, current_user_id
from schemas.common import page_of
from schemas.notifications import NotificationArgsSchema, NotificationSchema
from services import notifications

blp = Blueprint("notifications", __name__, url_prefix="/api/v1/notifications", description="What users are told")


@blp.route("")
class Notifications(MethodView):
    @auth_required()
    @blp.arguments(NotificationArgsSchema, location="query")
    @blp.response(200, page_of(NotificationSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The caller's notifications, newest first (``?unread=true`` for unread only)."""
        return notifications.list_for_user(current_user_id(), args["page"], args["size"], args["unread"]).as_dict()


@blp.route("/<notification_id>/read")
class ReadNotification(MethodView):
    @auth_required()
    @blp.response(200, NotificationSchema)
    def post(self, notification_id: str) -> Any:
        """Mark one of the caller's notifications read."""
        return notifications.mark_read(current_user_id(), notification_id)
