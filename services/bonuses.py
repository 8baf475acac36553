"""The bonus (loyalty) account: an append-only ledger and a balance that never goes negative.

Every change is a ledger entry plus a conditional UPDATE of the balance row
(``... WHERE balance >= :amount`` for anything that takes), so two concurrent spends of
the whole balance cannot both succeed, and the CHECK constraint catches anything that
slips past the code. The consumer on ``carhub.bonus`` credits a share of each succeeded
payment and reverses it on refund; the runtime's inbox dedups each message, and a
UNIQUE (kind, payment_id) on the ledger dedups each payment, whatever event ids arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from extensions import db
from models.base import ZERO, new_id, utcnow
from models.bonuses import BonusAccount, BonusEntry, PromoCode
from models.orders import Order
from models.payments import Payment
from models.users import User
from services.errors import Conflict, InsufficientFunds, InvalidInput, InvalidMessage, NotFound
from services.events import record_event
from services.notifications import notify
from services.pagination import paginate

if TYPE_CHECKING:
    from services.handlers import Event

CENT = Decimal("0.01")
MAX_PROMO = Decimal("1000000.00")


def accrual_for(amount: Decimal, rate: Decimal) -> Decimal:
    """The bonus a payment earns: ``rate`` of it, rounded down to the cent (0.99 → 0.00)."""
    return (Decimal(amount) * Decimal(rate)).quantize(CENT, rounding=ROUND_DOWN)


def balance_of(user_id: str) -> Decimal:
    balance = db.session.scalar(select(BonusAccount.balance).where(BonusAccount.user_id == user_id))
    return Decimal(balance if balance is not None else ZERO).quantize(CENT)


def account(user_id: str, page: int = 1, size: int = 50) -> dict[str, Any]:
    """The balance and the ledger, newest first (one page of it)."""
    query = (
        select(BonusEntry)
        .where(BonusEntry.user_id == user_id)
        .order_by(BonusEntry.created_at.desc(), BonusEntry.id.desc())
    )
    entries = paginate(query, page, size)
    return {
        "user_id": user_id,
        "balance": balance_of(user_id),
        "entries": [entry_snapshot(entry) for entry in entries.items],
        "page": page,
        "size": size,
        "total": entries.total,
    }


def account_for_viewer(user_id: str, viewer_id: str, viewer_is_staff: bool) -> dict[str, Any]:
    """Staff read anyone's account; a customer only their own (another's is a 404)."""
    if (not viewer_is_staff and user_id != viewer_id) or db.session.get(User, user_id) is None:
        raise NotFound(f"bonus account of {user_id} not found")
    return account(user_id)


def entry_snapshot(entry: BonusEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": entry.amount,
        "reference": entry.reference,
        "payment_id": entry.payment_id,
        "order_id": entry.order_id,
        "unreversed": entry.unreversed,
        "created_at": entry.created_at,
    }


# --- HTTP use cases ----------------------------------------------------------------------


def spend(user_id: str, amount: Decimal, order_id: str | None = None) -> dict[str, Any]:
    """Take ``amount`` from the balance; against an order it lowers what is left to pay."""
    amount = Decimal(amount).quantize(CENT)
    if amount <= 0:
        raise InvalidInput("spend a positive amount", errors={"amount": ["Must be greater than 0."]})
    order: Order | None = None
    if order_id is not None:
        order = db.session.get(Order, order_id)
        if order is None or order.user_id != user_id:
            raise NotFound(f"order {order_id} not found")
    # The balance first: the conditional UPDATE is the whole concurrency story.
    if not _take(user_id, amount):
        db.session.rollback()
        raise InsufficientFunds(f"the bonus balance is {balance_of(user_id)}, less than {amount}")
    if order is not None:
        applied = db.session.execute(
            update(Order)
            .where(
                Order.id == order.id,
                Order.paid_at.is_(None),
                Order.status != "cancelled",
                Order.total - Order.bonus_spent >= amount,
            )
            .values(bonus_spent=Order.bonus_spent + amount, updated_at=utcnow(), version=Order.version + 1)
            .execution_options(synchronize_session=False)
        ).rowcount
        if applied != 1:
            db.session.rollback()
            raise Conflict(
                f"bonus can only be spent on an unpaid, open order, up to what is left to pay ({order.amount_due})"
            )
    entry = _entry(user_id, "spend", -amount, reference=order_id, order_id=order_id)
    db.session.commit()
    return {"balance": balance_of(user_id), "entry": entry_snapshot(entry)}


def give_back_spent_on_order(user_id: str, order_id: str, amount: Decimal) -> None:
    """A cancelled order returns the bonus spent on it (a positive reversal); the caller
    commits. Once per order: an order is cancelled once (its status machine says so)."""
    _give(user_id, amount)
    _entry(user_id, "reversal", amount, reference=order_id, order_id=order_id)


def apply_promo_code(user_id: str, code: str) -> dict[str, Any]:
    """Credit a promo code, once per user (the ledger's UNIQUE (user, promo) says once)."""
    promo = db.session.scalar(select(PromoCode).where(PromoCode.code == normalise_code(code)))
    if promo is None:
        raise NotFound(f"promo code {code} not found")
    used = db.session.scalar(
        select(BonusEntry.id).where(BonusEntry.user_id == user_id, BonusEntry.promo_code_id == promo.id)
    )
    if used is not None:
        raise Conflict(f"promo code {promo.code} has been used already")
    _give(user_id, promo.amount)
    entry = _entry(user_id, "promo", promo.amount, reference=promo.code, promo_code_id=promo.id)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict(f"promo code {promo.code} has been used already") from exc
    return {"balance": balance_of(user_id), "entry": entry_snapshot(entry)}


def create_promo_code(code: str, amount: Decimal) -> PromoCode:
    """For ``flask promocodes create``; codes are case-insensitive (stored upper-case)."""
    code = normalise_code(code)
    try:
        amount = Decimal(amount).quantize(CENT)
    except InvalidOperation as exc:
        raise InvalidInput("amount must be a number", errors={"amount": ["Not a number."]}) from exc
    if not code or len(code) > 64:
        raise InvalidInput("a code is 1 to 64 characters", errors={"code": ["1 to 64 characters."]})
    if not amount.is_finite() or not 0 < amount <= MAX_PROMO:
        raise InvalidInput(
            f"a promo code credits more than 0 and at most {MAX_PROMO}", errors={"amount": ["Out of range."]}
        )
    if db.session.scalar(select(PromoCode.id).where(PromoCode.code == code)) is not None:
        raise Conflict(f"promo code {code} exists already")
    promo = PromoCode(code=code, amount=amount)
    db.session.add(promo)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict(f"promo code {code} exists already") from exc
    return promo


def normalise_code(code: str) -> str:
    return code.strip().upper()


# --- consumer handlers (queue carhub.bonus); they run in the consumer's transaction ------


def accrue_for_payment(event: Event) -> None:
    """``payment.succeeded`` → credit the accrual rate of the amount, once per payment.

    Four statements: read the payment, insert the ledger entry unless this payment has
    one (ON CONFLICT DO NOTHING on the UNIQUE (kind, payment_id): the same payment
    under another event id is a no-op, even concurrently), upsert the balance, and the
    outbox row. The consumer is the bottleneck of payment → bonus, so every round trip counts.
    """
    payment = _payment_of(event)
    if payment.status == "refunded":
        return  # the refund overtook this event: nothing to credit, nothing to reverse
    bonus = accrual_for(payment.amount, current_app.config.get("BONUS_ACCRUAL_RATE", Decimal("0.01")))
    if bonus <= 0:
        return  # 0.99 earns 0.00: no entry, no event
    if not _entry_once(payment.user_id, "accrual", bonus, payment.id, event.id):
        return  # already credited for this payment
    balance = _give(payment.user_id, bonus)
    record_event(
        "bonus.accrued",
        payment.user_id,
        {
            "user_id": payment.user_id,
            "payment_id": payment.id,
            "order_id": payment.order_id,
            "amount": bonus,
            "balance": balance,
        },
    )


def reverse_for_refund(event: Event) -> None:
    """``payment.refunded`` → take the accrual back, as far as the balance allows.

    What was already spent cannot be taken back; the reversal entry records it in
    ``unreversed`` (and ``GET /bonuses/me`` shows it).
    """
    payment = _payment_of(event)
    user_id = payment.user_id
    accrued = db.session.scalar(
        select(BonusEntry.amount).where(BonusEntry.kind == "accrual", BonusEntry.payment_id == payment.id)
    )
    if accrued is None:
        return  # nothing was credited (rounded to zero, or not yet: the accrual then skips)
    accrued = Decimal(accrued).quantize(CENT)
    # Lock the balance row (PostgreSQL; SQLite has one writer) so what we read is what we take.
    balance = db.session.scalar(select(BonusAccount.balance).where(BonusAccount.user_id == user_id).with_for_update())
    taken = min(accrued, Decimal(balance or ZERO).quantize(CENT))
    if not _entry_once(user_id, "reversal", -taken, payment.id, event.id, unreversed=accrued - taken):
        return  # reversed already
    if taken > 0 and not _take(user_id, taken):
        # Cannot happen under the row lock; if it does, a plain error makes the consumer retry.
        raise RuntimeError("the bonus balance changed under a row lock")
    record_event(
        "bonus.reversed",
        user_id,
        {
            "user_id": user_id,
            "payment_id": payment.id,
            "order_id": payment.order_id,
            "amount": taken,
            "unreversed": accrued - taken,
            "balance": Decimal(balance or ZERO).quantize(CENT) - taken,
        },
    )


def _payment_of(event: Event) -> Payment:
    """Tolerant reading of the event, but the payment row is the truth for who and how much.

    A payment event naming no payment we know can never apply: dead-letter it.
    """
    payment_id = event.data.get("payment_id") or event.subject
    payment = db.session.get(Payment, str(payment_id)) if payment_id else None
    if payment is None:
        raise InvalidMessage(f"{event.type} {event.id}: unknown payment {payment_id!r}")
    return payment


# --- the balance row -------------------------------------------------------------------


def _insert() -> Any:
    """INSERT with ON CONFLICT for this database (both speak it, with RETURNING)."""
    return postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _give(user_id: str, amount: Decimal) -> Decimal:
    """Add to the balance, creating the row on first use, in one race-free statement; the new balance."""
    insert = _insert()(BonusAccount).values(user_id=user_id, balance=amount, updated_at=utcnow())
    upsert = insert.on_conflict_do_update(
        index_elements=["user_id"],
        set_={"balance": BonusAccount.balance + insert.excluded.balance, "updated_at": insert.excluded.updated_at},
    ).returning(BonusAccount.balance)
    return Decimal(db.session.execute(upsert).scalar_one()).quantize(CENT)


def _take(user_id: str, amount: Decimal) -> bool:
    """Take ``amount`` only if the balance covers it; False if it does not (or no account)."""
    taken = db.session.execute(
        update(BonusAccount)
        .where(BonusAccount.user_id == user_id, BonusAccount.balance >= amount)
        .values(balance=BonusAccount.balance - amount, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    return taken == 1


def _entry(user_id: str, kind: str, amount: Decimal, **fields: Any) -> BonusEntry:
    entry = BonusEntry(user_id=user_id, kind=kind, amount=amount, **fields)
    db.session.add(entry)
    db.session.flush()
    return entry


def _entry_once(
    user_id: str, kind: str, amount: Decimal, payment_id: str, event_id: str, unreversed: Decimal = ZERO
) -> bool:
    """Insert the ``kind`` entry of a payment unless it exists; True if this call inserted it."""
    insert = (
        _insert()(BonusEntry)
        .values(
            id=new_id(),
            user_id=user_id,
            kind=kind,
            amount=amount,
            reference=payment_id,
            payment_id=payment_id,
            unreversed=unreversed,
            event_id=event_id,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["kind", "payment_id"])
        .returning(BonusEntry.id)
    )
    return db.session.execute(insert).scalar_one_or_none() is not None


# --- event → notification rules (queue carhub.notifications) ---------------------------


def _notify_accrued(event: Event) -> None:
    data = event.data
    notify(
        data.get("user_id"),
        event,
        f"You earned {data.get('amount')} bonus",
        f"Your bonus balance is {data.get('balance')}",
        data.get("payment_id"),
    )


def _notify_reversed(event: Event) -> None:
    data = event.data
    body = f"Your bonus balance is {data.get('balance')}"
    if Decimal(str(data.get("unreversed") or 0)) > 0:
        body += f"; {data.get('unreversed')} was already spent and stays yours"
    notify(
        data.get("user_id"),
        event,
        f"{data.get('amount')} bonus taken back after a refund",
        body,
        data.get("payment_id"),
    )


HANDLERS: dict[str, Callable[[Event], None]] = {
    "payment.succeeded": accrue_for_payment,
    "payment.refunded": reverse_for_refund,
}
NOTIFICATIONS: dict[str, Callable[[Event], None]] = {
    "bonus.accrued": _notify_accrued,
    "bonus.reversed": _notify_reversed,
}
