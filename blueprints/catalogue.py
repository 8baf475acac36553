"""The priced catalogue: /api/v1/services (read by anyone, edited by staff)."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, if_match
from schemas.catalogue import CatalogueArgsSchema, CatalogueItemPatchSchema, CatalogueItemSchema
from schemas.common import page_of
from services import catalogue

blp = Blueprint("catalogue", __name__, url_prefix="/api/v1", description="The priced catalogue of services and parts")


@blp.route("/services")
class Services(MethodView):
    @blp.arguments(CatalogueArgsSchema, location="query")
    @blp.response(200, page_of(CatalogueItemSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The active catalogue, services first (``?kind=part`` for parts only)."""
        return catalogue.list_items(args["page"], args["size"], kind=args.get("kind"), q=args.get("q")).as_dict()

    @auth_required("staff")
    @blp.arguments(CatalogueItemSchema)
    @blp.response(201, CatalogueItemSchema)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Add a service or part to the catalogue."""
        item = catalogue.create_item(body)
        return item, 201, {"Location": url_for("catalogue.Service", code=item["code"]), "ETag": catalogue.etag(item)}


@blp.route("/services/<code>")
class Service(MethodView):
    @blp.response(200, CatalogueItemSchema)
    def get(self, code: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """One catalogue item by its code (the ETag is its version)."""
        return _one(catalogue.get_item(code))

    @auth_required("staff")
    @blp.arguments(CatalogueItemPatchSchema(partial=True))
    @blp.response(200, CatalogueItemSchema)
    def patch(self, body: dict[str, Any], code: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Change a price, a name, or withdraw an item (``active: false``); orders keep their copy.

        Honours If-Match (412 when the item changed since it was read).
        """
        return _one(catalogue.update_item(code, body, if_match()))


def _one(item: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    return item, 200, {"ETag": catalogue.etag(item)}
