"""Payments: /api/v1/payments."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, current_user_id, is_staff
from schemas.common import page_of
from schemas.payments import IdempotencyHeaderSchema, PaymentCreateSchema, PaymentListArgsSchema, PaymentSchema
from services import payments
from services.orders import Viewer

blp = Blueprint("payments", __name__, url_prefix="/api/v1", description="Payments of orders")


def viewer() -> Viewer:
    return Viewer(user_id=current_user_id(), is_staff=is_staff())


@blp.route("/payments")
class Payments(MethodView):
    @auth_required()
    @blp.arguments(PaymentListArgsSchema, location="query")
    @blp.response(200, page_of(PaymentSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Payments, newest first: a customer's own, or everyone's for staff."""
        return payments.list_payments(viewer(), args["page"], args["size"], order_id=args.get("order_id")).as_dict()

    @auth_required()
    @blp.arguments(IdempotencyHeaderSchema, location="headers", as_kwargs=True)
    @blp.arguments(PaymentCreateSchema)
    @blp.response(201, PaymentSchema)
    def post(self, body: dict[str, Any], **headers: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Pay one of your orders; the amount is the order's, less bonus spent on it.

        With an ``Idempotency-Key`` a retry returns the first result (and changes nothing).
        """
        result = payments.pay_order(current_user_id(), body["order_id"], body["method"], headers.get("idempotency_key"))
        location = url_for("payments.Payment", payment_id=result.payment["id"])
        response_headers = {"Location": location, "ETag": payments.etag(result.payment)}
        if result.replayed:
            response_headers["Idempotent-Replayed"] = "true"
        return result.payment, 201, response_headers


@blp.route("/payments/<payment_id>")
class Payment(MethodView):
    @auth_required()
    @blp.response(200, PaymentSchema)
    def get(self, payment_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """One payment (its payer or staff)."""
        payment = payments.get_payment(payment_id, viewer())
        return payment, 200, {"ETag": payments.etag(payment)}


@blp.route("/payments/<payment_id>/refund")
class Refund(MethodView):
    @auth_required("staff")
    @blp.response(200, PaymentSchema)
    def post(self, payment_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Refund a succeeded payment; its bonus accrual is reversed by the consumer."""
        payment = payments.refund_payment(payment_id)
        return payment, 200, {"ETag": payments.etag(payment)}
