"""Traffic fines: /api/v1/fines."""

from __future__ import annotations

from typing import Any

from flask import Response, url_for
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, current_user_id, is_staff, with_etag
from schemas.common import page_of
from schemas.fines import FineListArgsSchema, FineSchema
from services import fines

blp = Blueprint("fines", __name__, url_prefix="/api/v1", description="Traffic fines of the plates of cars")


def _viewer() -> fines.Viewer:
    return fines.Viewer(user_id=current_user_id(), staff=is_staff())


@blp.route("/fines")
class Fines(MethodView):
    @auth_required()
    @blp.arguments(FineListArgsSchema, location="query")
    @blp.response(200, page_of(FineSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Fines, newest first: ``?license_plate=`` for one plate, ``?paid=`` by state.

        Customers see only the fines of plates of the cars they own; another plate
        gives an empty list. Staff see every fine.
        """
        page, size = args.pop("page"), args.pop("size")
        return fines.list_fines(_viewer(), page, size, **args).as_dict()

    @auth_required("staff")
    @blp.arguments(FineSchema)
    @blp.response(201, FineSchema)
    def post(self, body: dict[str, Any]) -> Response:
        """Issue a fine against a licence plate."""
        fine = fines.issue_fine(**body, issued_by=current_user_id())
        return _one(fine, 201, headers={"Location": url_for("fines.Fine", fine_id=fine["id"])})


@blp.route("/fines/<fine_id>")
class Fine(MethodView):
    @auth_required()
    @blp.response(200, FineSchema)
    def get(self, fine_id: str) -> Response:
        """One fine (404 for a fine of a plate the caller does not own)."""
        return _one(fines.get_fine(_viewer(), fine_id))


@blp.route("/fines/<fine_id>/pay")
class PayFine(MethodView):
    @auth_required()
    @blp.response(200, FineSchema)
    def post(self, fine_id: str) -> Response:
        """Pay a fine: the owner of the plate's car, or staff at the desk; 409 if paid."""
        return _one(fines.pay_fine(_viewer(), fine_id))


def _one(fine: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(FineSchema().dumps(fine), status=status, mimetype="application/json", headers=headers)
    return with_etag(response, fines.etag(fine))
