"""Fleet inventory: /api/v1/cars."""

from __future__ import annotations

from typing import Any

from flask import Response, url_for
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, if_match, with_etag
from schemas.cars import CarListArgsSchema, CarSchema
from schemas.common import page_of
from services import cars

blp = Blueprint("cars", __name__, url_prefix="/api/v1/cars", description="Fleet inventory")


@blp.route("")
class Cars(MethodView):
    @auth_required()
    @blp.arguments(CarListArgsSchema, location="query")
    @blp.response(200, page_of(CarSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List cars, filtered and sorted, one page at a time."""
        page, size = args.pop("page"), args.pop("size")
        sort = tuple(part.strip() for part in args.pop("sort").split(","))
        return cars.list_cars(cars.CarFilters(**args, sort=sort), page, size).as_dict()

    @auth_required("staff")
    @blp.arguments(CarSchema)
    @blp.response(201, CarSchema)
    def post(self, body: dict[str, Any]) -> Response:
        """Add a car to the fleet."""
        car = cars.create_car(body)
        return _one(car, 201, headers={"Location": url_for("cars.Car", car_id=car["id"])})


@blp.route("/<car_id>")
class Car(MethodView):
    @auth_required()
    @blp.response(200, CarSchema)
    def get(self, car_id: str) -> Response:
        """One car (cached; the ETag is its version)."""
        return _one(cars.get_car(car_id))

    @auth_required("staff")
    @blp.arguments(CarSchema)
    @blp.response(200, CarSchema)
    def put(self, body: dict[str, Any], car_id: str) -> Response:
        """Replace a car (honours If-Match)."""
        return _one(cars.update_car(car_id, body, replace=True, if_match=if_match()))

    @auth_required("staff")
    @blp.arguments(CarSchema(partial=True))
    @blp.response(200, CarSchema)
    def patch(self, body: dict[str, Any], car_id: str) -> Response:
        """Change some fields of a car (honours If-Match)."""
        return _one(cars.update_car(car_id, body, replace=False, if_match=if_match()))

    @auth_required("staff")
    @blp.response(204)
    def delete(self, car_id: str) -> None:
        """Remove a car (honours If-Match)."""
        cars.delete_car(car_id, if_match())


# One instance for every response: building a Schema deep-copies its fields, which cost
# more than the dump itself on the cached read (bench/api.py). Dumping keeps no state.
_CAR_DUMPER = CarSchema()
# A car's id and version (its ETag) fix its representation, so each process renders a
# version once: the dump cost a tenth of a cached read. Bounded; an old version is
# simply never asked for again.
_RENDERED: dict[str, str] = {}
_RENDERED_MAX = 10_000


def _one(car: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    tag = cars.etag(car)
    body = _RENDERED.get(tag)
    if body is None:
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()
        body = _RENDERED[tag] = _CAR_DUMPER.dumps(car)
    response = Response(body, status=status, mimetype="application/json", headers=headers)
    return with_etag(response, tag)
