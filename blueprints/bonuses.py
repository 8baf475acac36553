"""The bonus account: /api/v1/bonuses, and ``flask promocodes create``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click
from flask.views import MethodView

from blueprints.common import Blueprint, auth_required, current_user_id, is_staff
from schemas.bonuses import BonusAccountArgsSchema, BonusAccountSchema, BonusChangeSchema, PromoApplySchema, SpendSchema
from services import bonuses
from services.errors import DomainError

# cli_group: the blueprint's commands are ``flask promocodes ...`` once it is registered.
blp = Blueprint(
    "bonuses", __name__, url_prefix="/api/v1", description="The bonus (loyalty) account", cli_group="promocodes"
)


@blp.route("/bonuses/me")
class MyBonuses(MethodView):
    @auth_required()
    @blp.arguments(BonusAccountArgsSchema, location="query")
    @blp.response(200, BonusAccountSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The caller's balance and ledger, newest entries first."""
        return bonuses.account(current_user_id(), args["page"], args["size"])


@blp.route("/bonuses/users/<user_id>")
class UserBonuses(MethodView):
    @auth_required()
    @blp.response(200, BonusAccountSchema)
    def get(self, user_id: str) -> dict[str, Any]:
        """Anyone's account for staff; a customer only their own (another's is a 404)."""
        return bonuses.account_for_viewer(user_id, current_user_id(), is_staff())


@blp.route("/bonuses/promocodes/apply")
class ApplyPromoCode(MethodView):
    @auth_required()
    @blp.arguments(PromoApplySchema)
    @blp.response(200, BonusChangeSchema)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Credit a promo code (once per user; unknown 404, used 409)."""
        return bonuses.apply_promo_code(current_user_id(), body["code"])


@blp.route("/bonuses/spend")
class Spend(MethodView):
    @auth_required()
    @blp.arguments(SpendSchema)
    @blp.response(200, BonusChangeSchema)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Spend bonus, optionally against an unpaid order (lowers what is left to pay); 409 when short."""
        return bonuses.spend(current_user_id(), body["amount"], body.get("order_id"))


@blp.cli.command("create")
@click.option("--code", required=True, help="Case-insensitive; stored upper-case.")
@click.option("--amount", required=True, help="The bonus it credits, e.g. 100 or 99.50.")
def create_promo_code(code: str, amount: str) -> None:
    """Create a promo code that credits AMOUNT bonus, usable once per user."""
    try:
        promo = bonuses.create_promo_code(code, Decimal(str(amount)))
    except DomainError as error:
        raise click.ClickException(error.detail) from error
    except ArithmeticError as error:
        raise click.BadParameter("not a number", param_hint="--amount") from error
    click.echo(f"promo code {promo.code} credits {promo.amount}")
