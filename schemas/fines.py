"""Fines on the wire."""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import ValidationError, fields, pre_load, validate, validates

from schemas.common import PageArgsSchema, StrictSchema, no_control_characters

CENT = decimal.Decimal("0.01")
# Numeric(12, 2): ten digits before the point.
MAX_AMOUNT = decimal.Decimal("9999999999.99")


# Clocks of the issuing camera and of this server may disagree a little.
CLOCK_SKEW = timedelta(minutes=5)


class ExactMoney(fields.Decimal):
    """Money that must already have at most two places: ``"10.005"`` is an error, not
    silently rounded to ``"10.01"`` (a fine's amount is a legal figure)."""

    default_error_messages = {"places": "At most two decimal places."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(places=2, as_string=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> decimal.Decimal:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                exact = decimal.Decimal(str(value).strip())
                too_precise = exact.is_finite() and exact != exact.quantize(CENT)
            except decimal.InvalidOperation:
                too_precise = False  # not a number at all: the parent says "invalid"
            if too_precise:
                raise self.make_error("places")
        return super()._deserialize(value, attr, data, **kwargs)


class FineSchema(StrictSchema):
    """A fine; the body of POST /fines (``license_plate, amount, reason, issued_at``)."""

    id = fields.String(dump_only=True)
    license_plate = fields.String(required=True, validate=[validate.Length(min=1, max=16), no_control_characters])
    amount = ExactMoney(
        required=True,
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_AMOUNT, error="Must be above 0 and at most {max}."),
    )
    reason = fields.String(required=True, validate=[validate.Length(min=1, max=500)])
    issued_at = fields.AwareDateTime(required=True, default_timezone=UTC)
    issued_by = fields.String(dump_only=True, allow_none=True)
    status = fields.String(dump_only=True, metadata={"enum": ["unpaid", "paid"]})
    paid_at = fields.DateTime(dump_only=True, allow_none=True)
    paid_by = fields.String(dump_only=True, allow_none=True)
    created_at = fields.DateTime(dump_only=True)

    @pre_load
    def normalise(self, data: Any, **_: Any) -> Any:
        """Plates as cars store them (trimmed, upper-case); a reason without padding."""
        if isinstance(data, dict):
            data = dict(data)
            for name in ("license_plate", "reason"):
                if isinstance(data.get(name), str):
                    data[name] = data[name].strip()
            if isinstance(data.get("license_plate"), str):
                data["license_plate"] = data["license_plate"].upper()
        return data

    @validates("issued_at")
    def validate_issued_at(self, issued_at: datetime, **_: Any) -> None:
        if issued_at > datetime.now(UTC) + CLOCK_SKEW:
            raise ValidationError("A fine cannot be issued in the future.")


class FineListArgsSchema(PageArgsSchema):
    license_plate = fields.String(validate=[validate.Length(min=1, max=16), no_control_characters])
    paid = fields.Boolean()
