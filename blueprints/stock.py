"""Stock over HTTP: commands (applied by the consumer), levels, movements, the warehouse webhook."""

from __future__ import annotations

from typing import Any

from flask import Response, request, url_for
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, current_user_id
from schemas.common import page_of
from schemas.stock import (
    CommandAcceptedSchema,
    MovementSchema,
    StockCommandSchema,
    StockCommandStatusSchema,
    StockItemArgsSchema,
    StockLevelSchema,
    WarehouseMovementEventSchema,
    WebhookAcceptedSchema,
)
from services import stock

blp = Blueprint("stock", __name__, url_prefix="/api/v1", description="Warehouse stock")


@blp.route("/stock/commands")
class StockCommands(MethodView):
    @auth_required("staff")
    @blp.arguments(StockCommandSchema)
    @blp.response(202, CommandAcceptedSchema)
    @blp.doc(parameters=[{"in": "header", "name": "Idempotency-Key", "schema": {"type": "string"}}])
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Ask for an increase or decrease; the consumer applies it (honours Idempotency-Key)."""
        accepted = stock.submit_command(body, current_user_id(), request.headers.get("Idempotency-Key"))
        location = url_for("stock.StockCommand", command_id=accepted["command_id"])
        return accepted, 202, {"Location": location}


@blp.route("/stock/commands/<command_id>")
class StockCommand(MethodView):
    @auth_required("staff")
    @blp.response(200, StockCommandStatusSchema)
    def get(self, command_id: str) -> dict[str, Any]:
        """A command's status: pending, applied or rejected (with the reason)."""
        return stock.get_command(command_id)


@blp.route("/stock/items")
class StockItems(MethodView):
    @auth_required()
    @blp.arguments(StockItemArgsSchema, location="query")
    @blp.response(200, page_of(StockLevelSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Stock levels, by warehouse then sku (cached)."""
        return stock.list_levels(args.get("warehouse_id"), args.get("sku"), args["page"], args["size"])


@blp.route("/warehouses/<warehouse_id>/products/<path:sku>")  # a sku may contain "/"
class WarehouseProduct(MethodView):
    @auth_required()
    @blp.response(200, StockLevelSchema)
    def get(self, warehouse_id: str, sku: str) -> Response:
        """How many of a product a warehouse holds (cached; 0 if never stocked)."""
        # A hot read: one shared dumper straight to the body (as cars do), not a Schema
        # per response and jsonify.
        return Response(_LEVEL_DUMPER.dumps(stock.get_level(warehouse_id, sku)), mimetype="application/json")


@blp.route("/movements/<movement_id>")
class Movement(MethodView):
    @auth_required("staff")
    @blp.response(200, MovementSchema)
    def get(self, movement_id: str) -> dict[str, Any]:
        """A movement between warehouses: its departure and arrival sides."""
        return stock.get_movement(movement_id)


@blp.route("/webhooks/warehouse-movements")
class WarehouseMovementWebhook(MethodView):
    @auth_required("staff")
    @blp.arguments(WarehouseMovementEventSchema)
    @blp.response(202, WebhookAcceptedSchema)
    def post(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """A warehouse movement CloudEvent, queued exactly as if published to the broker."""
        return stock.accept_movement(envelope)


_LEVEL_DUMPER = StockLevelSchema()
