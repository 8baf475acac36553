"""The support desk over HTTP: /api/v1/tickets and their messages."""

from __future__ import annotations

from typing import Any

from flask import Response, url_for
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, current_user_id, if_match, is_staff, with_etag
from schemas.common import PageArgsSchema, page_of
from schemas.tickets import (
    TicketCreateSchema,
    TicketListArgsSchema,
    TicketMessageCreateSchema,
    TicketMessageSchema,
    TicketPatchSchema,
    TicketSchema,
)
from services import tickets

blp = Blueprint("tickets", __name__, url_prefix="/api/v1", description="Support desk: tickets and messages")


def _viewer() -> tickets.Viewer:
    return tickets.Viewer(user_id=current_user_id(), is_staff=is_staff())


@blp.route("/tickets")
class Tickets(MethodView):
    @auth_required()
    @blp.arguments(TicketListArgsSchema, location="query")
    @blp.response(200, page_of(TicketSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Tickets newest first, filtered by ``user_name`` (exact) and ``status``; customers see their own."""
        page, size = args.pop("page"), args.pop("size")
        return tickets.list_tickets(_viewer(), tickets.TicketFilters(**args), page, size).as_dict()

    @auth_required()
    @blp.arguments(TicketCreateSchema)
    @blp.response(201, TicketSchema)
    def post(self, body: dict[str, Any]) -> Response:
        """Open a ticket (any signed-in user)."""
        ticket = tickets.create_ticket(_viewer(), **body)
        return _one(ticket, 201, headers={"Location": url_for("tickets.Ticket", ticket_id=ticket["id"])})


@blp.route("/tickets/<ticket_id>")
class Ticket(MethodView):
    @auth_required()
    @blp.response(200, TicketSchema)
    def get(self, ticket_id: str) -> Response:
        """One ticket (owner or staff; anyone else gets 404)."""
        return _one(tickets.get_ticket(_viewer(), ticket_id))

    @auth_required("staff")
    @blp.arguments(TicketPatchSchema)
    @blp.response(200, TicketSchema)
    def patch(self, body: dict[str, Any], ticket_id: str) -> Response:
        """Move the status along the lifecycle and/or assign staff (honours If-Match)."""
        return _one(tickets.update_ticket(_viewer(), ticket_id, body, if_match()))


@blp.route("/tickets/<ticket_id>/messages")
class TicketMessages(MethodView):
    @auth_required()
    @blp.arguments(TicketMessageCreateSchema)
    @blp.response(201, TicketMessageSchema)
    def post(self, body: dict[str, Any], ticket_id: str) -> dict[str, Any]:
        """Write on a ticket (owner or staff); 409 once it is closed."""
        return tickets.add_message(_viewer(), ticket_id, body["body"])

    @auth_required()
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, page_of(TicketMessageSchema))
    def get(self, args: dict[str, Any], ticket_id: str) -> dict[str, Any]:
        """The conversation, oldest first (owner or staff)."""
        return tickets.list_messages(_viewer(), ticket_id, args["page"], args["size"]).as_dict()


def _one(ticket: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(TicketSchema().dumps(ticket), status=status, mimetype="application/json", headers=headers)
    return with_etag(response, tickets.etag(ticket))
