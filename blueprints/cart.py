"""The caller's shopping cart: /api/v1/cart."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, current_user_id, if_match, with_etag
from schemas.cart import CartItemSchema, CartQuantitySchema, CartSchema, CheckoutSchema
from schemas.orders import OrderSchema
from services import cart

blp = Blueprint("cart", __name__, url_prefix="/api/v1", description="The caller's cart, checked out as an order")


@blp.route("/cart")
class Cart(MethodView):
    @auth_required()
    @blp.response(200, CartSchema)
    def get(self) -> dict[str, Any]:
        """The caller's cart at the catalogue's current prices."""
        return cart.get_cart(current_user_id())

    @auth_required()
    @blp.response(204)
    def delete(self) -> None:
        """Empty the caller's cart."""
        cart.clear(current_user_id())


@blp.route("/cart/items")
class CartItems(MethodView):
    @auth_required()
    @blp.arguments(CartItemSchema)
    @blp.response(201, CartItemSchema)
    def post(self, body: dict[str, Any]) -> Response:
        """Add ``qty`` of a catalogue code; the same code again raises the line's qty."""
        return _line(cart.add_item(current_user_id(), body["code"], body["qty"]), 201)


@blp.route("/cart/items/<item_id>")
class CartItem(MethodView):
    @auth_required()
    @blp.arguments(CartQuantitySchema)
    @blp.response(200, CartItemSchema)
    def patch(self, body: dict[str, Any], item_id: str) -> Response:
        """Set a line's quantity (honours If-Match)."""
        return _line(cart.set_quantity(current_user_id(), item_id, body["qty"], if_match()))

    @auth_required()
    @blp.response(204)
    def delete(self, item_id: str) -> None:
        """Remove a line (another user's line is a 404; honours If-Match)."""
        cart.remove_item(current_user_id(), item_id, if_match())


@blp.route("/cart/checkout")
class Checkout(MethodView):
    @auth_required()
    @blp.arguments(CheckoutSchema)
    @blp.response(201, OrderSchema)
    def post(self, body: dict[str, Any]) -> Response:
        """Place an order from the cart (prices copied now) and empty the cart; 409 if empty."""
        order = cart.checkout(current_user_id(), **body)
        return Response(
            OrderSchema().dumps(order),
            status=201,
            mimetype="application/json",
            headers={"Location": f"/api/v1/orders/{order['id']}"},
        )


def _line(line: dict[str, Any], status: int = 200) -> Response:
    response = Response(CartItemSchema().dumps(line), status=status, mimetype="application/json")
    return with_etag(response, cart.etag(line))
