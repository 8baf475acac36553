"""Service orders: /api/v1/orders."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, current_user_id, if_match, is_staff
from schemas.common import page_of
from schemas.orders import OrderCreateSchema, OrderListArgsSchema, OrderSchema, OrderStatusSchema, ReviewSchema
from services import orders

blp = Blueprint("orders", __name__, url_prefix="/api/v1", description="Service orders")


def viewer() -> orders.Viewer:
    return orders.Viewer(user_id=current_user_id(), is_staff=is_staff())


@blp.route("/orders")
class Orders(MethodView):
    @auth_required()
    @blp.arguments(OrderListArgsSchema, location="query")
    @blp.response(200, page_of(OrderSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Orders, newest first: a customer's own, or everyone's for staff."""
        page, size = args.pop("page"), args.pop("size")
        return orders.list_orders(viewer(), page, size, **args).as_dict()

    @auth_required()
    @blp.arguments(OrderCreateSchema)
    @blp.response(201, OrderSchema)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Order services for a car; prices are copied from the catalogue, the total computed."""
        order = orders.create_order(current_user_id(), **body)
        return order, 201, {"Location": url_for("orders.Order", order_id=order["id"]), "ETag": orders.etag(order)}


@blp.route("/orders/<order_id>")
class Order(MethodView):
    @auth_required()
    @blp.response(200, OrderSchema)
    def get(self, order_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """One order (its owner or staff); the ETag is its version."""
        return _one(orders.get_order(order_id, viewer()))


@blp.route("/orders/<order_id>/status")
class OrderStatus(MethodView):
    @auth_required("staff")
    @blp.arguments(OrderStatusSchema)
    @blp.response(200, OrderSchema)
    def patch(self, body: dict[str, Any], order_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """new → confirmed → in_progress → done, or → cancelled before done; else 409 (honours If-Match)."""
        return _one(orders.change_status(order_id, body["status"], if_match()))


@blp.route("/orders/<order_id>/review")
class OrderReview(MethodView):
    @auth_required()
    @blp.arguments(ReviewSchema)
    @blp.response(201, OrderSchema)
    def post(self, body: dict[str, Any], order_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Review a done order, once, as its owner."""
        order = orders.review_order(order_id, viewer(), body["rating"], body.get("comment"))
        return order, 201, {"ETag": orders.etag(order)}


def _one(order: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    return order, 200, {"ETag": orders.etag(order)}
