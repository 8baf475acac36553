"""The parts warehouse: commands and movements applied once, stock never below zero.

Two doors lead here. HTTP writes a pending command and its ``stock.command.<action>``
event in one transaction; the consumer (the other door) applies it. Outside clients
publish bare commands and warehouse movements straight to the broker, and the webhook
turns a movement into the same event, so every change to a stock level is made by
the handlers below, inside the consumer's transaction (inbox row + effect), never
committed by them.

Concurrency: a command is claimed with ``UPDATE ... WHERE status = 'pending'`` and a
movement side with ``UPDATE ... WHERE <side>_quantity IS NULL`` (the row lock makes a
racing duplicate wait and then find nothing to do); a decrease is
``UPDATE ... SET qty = qty - n WHERE qty >= n`` (no oversell, no lost update); an
increase on a new (warehouse, sku) is an ``INSERT ... ON CONFLICT DO UPDATE``. The
CHECK ``qty >= 0`` and the ledger's UNIQUE constraints back all of it up.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import namedtuple
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from marshmallow import Schema, ValidationError
from sqlalchemy import Table, and_, func, insert, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from extensions import db
from models.base import new_id, utcnow
from models.messaging import OutboxMessage
from models.stock import (
    MAIN_WAREHOUSE,
    REJECTED_INSUFFICIENT,
    StockCommand,
    StockLedgerEntry,
    StockLevel,
    StockMovement,
    Warehouse,
)
from schemas.stock import CommandMessageSchema, MovementDataSchema, is_visible_id
from services import cache
from services.errors import Conflict, InvalidInput, InvalidMessage, NotFound
from services.events import jsonable, record_event
from services.notifications import notify
from services.pagination import paginate

if TYPE_CHECKING:
    from services.handlers import Event

ITEMS_NAMESPACE = "stock:items"
COMMAND_MESSAGES = CommandMessageSchema()  # built once: a schema is reusable, and not free to build
MOVEMENT_MESSAGES = MovementDataSchema()
IDEMPOTENCY_KEY_LENGTH = 255

levels: Table = StockLevel.__table__  # type: ignore[assignment]
ledger: Table = StockLedgerEntry.__table__  # type: ignore[assignment]
commands: Table = StockCommand.__table__  # type: ignore[assignment]
movements: Table = StockMovement.__table__  # type: ignore[assignment]
warehouses: Table = Warehouse.__table__  # type: ignore[assignment]


def level_key(warehouse_id: str, sku: str) -> str:
    """Length-prefixed: ids may contain ':', and ("a:b", "c") must not be ("a", "b:c")."""
    return f"stock:level:{len(warehouse_id)}:{warehouse_id}:{sku}"


# --- reference data --------------------------------------------------------------------


def seed_main_warehouse() -> None:
    """``main`` exists from the start: it is the default of every command."""
    db.session.execute(_insert(warehouses).values(id=MAIN_WAREHOUSE, created_at=utcnow()).on_conflict_do_nothing())


# --- HTTP: commands ----------------------------------------------------------------------


def submit_command(fields: dict[str, Any], issued_by: str, idempotency_key: str | None = None) -> dict[str, Any]:
    """Write a pending command and its event; the consumer applies it.

    The same ``Idempotency-Key`` (per user) or the same ``command_id`` returns the
    first command and changes nothing; reused with a different body it is an error.
    """
    if idempotency_key is not None and not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_LENGTH:
        raise InvalidInput(
            "the Idempotency-Key header is too long or empty",
            errors={"Idempotency-Key": [f"1 to {IDEMPOTENCY_KEY_LENGTH} characters."]},
        )
    earlier = _earlier_command(fields, issued_by, idempotency_key)
    if earlier is not None:
        return _accepted(earlier)
    command = StockCommand(
        id=fields.get("command_id") or new_id(),
        action=fields["action"],
        sku=fields["sku"],
        qty=fields["qty"],
        warehouse_id=fields["warehouse_id"],
        status="pending",
        issued_by=issued_by,
        idempotency_key=idempotency_key,
    )
    db.session.add(command)
    record_event(f"stock.command.{command.action}", command.id, _command_event_data(command))
    try:
        db.session.commit()
    except IntegrityError:
        # A concurrent request with the same command_id or key won the insert.
        db.session.rollback()
        earlier = _earlier_command(fields, issued_by, idempotency_key)
        if earlier is None:
            raise
        return _accepted(earlier)
    return _accepted(command)


def _earlier_command(fields: dict[str, Any], issued_by: str, idempotency_key: str | None) -> StockCommand | None:
    if idempotency_key is not None:
        earlier = db.session.scalar(
            select(StockCommand).where(
                StockCommand.issued_by == issued_by, StockCommand.idempotency_key == idempotency_key
            )
        )
        if earlier is not None:
            if not _same_request(earlier, fields):
                # IETF draft "The Idempotency-Key HTTP Header Field": a reused key with
                # another payload is a 422, not a silent replay of something else.
                raise InvalidInput(
                    "this Idempotency-Key was used for a different command",
                    errors={"Idempotency-Key": ["Already used with another body."]},
                )
            return earlier
    if fields.get("command_id"):
        earlier = db.session.get(StockCommand, fields["command_id"])
        if earlier is not None:
            if not _same_request(earlier, fields):
                raise Conflict(f"command {earlier.id} exists with other values")
            return earlier
    return None


def _same_request(command: StockCommand, fields: dict[str, Any]) -> bool:
    return (
        command.action == fields["action"]
        and command.sku == fields["sku"]
        and command.qty == fields["qty"]
        and command.warehouse_id == fields["warehouse_id"]
        and fields.get("command_id", command.id) == command.id
    )


def _accepted(command: StockCommand) -> dict[str, Any]:
    return {"status": "accepted", "command_id": command.id}


def _command_event_data(command: StockCommand) -> dict[str, Any]:
    return {
        "command_id": command.id,
        "action": command.action,
        "sku": command.sku,
        "qty": command.qty,
        "warehouse_id": command.warehouse_id,
        "issued_by": command.issued_by,
    }


def get_command(command_id: str) -> dict[str, Any]:
    command = db.session.get(StockCommand, command_id, populate_existing=True)
    if command is None:
        raise NotFound(f"stock command {command_id} not found")
    return {
        "command_id": command.id,
        "action": command.action,
        "sku": command.sku,
        "qty": command.qty,
        "warehouse_id": command.warehouse_id,
        "status": command.status,
        "reason": command.reason,
        "created_at": command.created_at,
        "applied_at": command.applied_at,
    }


# --- HTTP: reads (cached; the consumer invalidates after it commits) ------------------------


def get_level(warehouse_id: str, sku: str) -> dict[str, Any]:
    """One (warehouse, sku); qty 0 and no ``updated_at`` if it was never stocked."""
    _check_id("warehouse_id", warehouse_id)
    _check_id("sku", sku)

    def load() -> dict[str, Any]:
        row = db.session.execute(
            select(levels.c.qty, levels.c.updated_at).where(levels.c.warehouse_id == warehouse_id, levels.c.sku == sku)
        ).first()
        qty, updated_at = (row.qty, row.updated_at) if row else (0, None)
        return {"warehouse_id": warehouse_id, "sku": sku, "qty": qty, "updated_at": updated_at}

    return cache.cached(level_key(warehouse_id, sku), load)  # type: ignore[return-value]


def list_levels(warehouse_id: str | None, sku: str | None, page: int, size: int) -> dict[str, Any]:
    """Stock levels by warehouse then sku; cached per generation (any change starts one)."""
    params = json.dumps([warehouse_id, sku, page, size])
    key = hashlib.blake2b(params.encode(), digest_size=16).hexdigest()

    def load() -> dict[str, Any]:
        query = select(StockLevel)
        if warehouse_id:
            query = query.where(StockLevel.warehouse_id == warehouse_id)
        if sku:
            query = query.where(StockLevel.sku == sku)
        result = paginate(query.order_by(StockLevel.warehouse_id, StockLevel.sku), page, size)
        items = [
            {"warehouse_id": item.warehouse_id, "sku": item.sku, "qty": item.qty, "updated_at": item.updated_at}
            for item in result.items
        ]
        return {**result.as_dict(), "items": items}

    return cache.cached_in_generation(ITEMS_NAMESPACE, key, load)


def get_movement(movement_id: str) -> dict[str, Any]:
    movement = db.session.get(StockMovement, movement_id, populate_existing=True)
    if movement is None:
        raise NotFound(f"movement {movement_id} not found")
    source = _side(movement, "source")
    destination = _side(movement, "destination")
    both = source is not None and destination is not None
    return {
        "movement_id": movement.id,
        "sku": movement.sku,
        "source": source,
        "destination": destination,
        "status": "completed" if destination is not None else "in_transit",
        "transit_seconds": (destination["at"] - source["at"]).total_seconds() if both else None,
        "quantity_difference": destination["quantity"] - source["quantity"] if both else None,
    }


def _side(movement: StockMovement, side: str) -> dict[str, Any] | None:
    quantity = getattr(movement, f"{side}_quantity")
    if quantity is None:
        return None
    return {
        "warehouse_id": getattr(movement, f"{side}_warehouse_id"),
        "at": getattr(movement, f"{side}_at"),
        "quantity": quantity,
        "status": getattr(movement, f"{side}_status"),
    }


def _check_id(name: str, value: str) -> None:
    if not is_visible_id(value):
        raise InvalidInput(f"{name} is not valid", errors={name: ["1 to 64 visible characters, no spaces."]})


# --- HTTP: the warehouse webhook -----------------------------------------------------------


def accept_movement(envelope: dict[str, Any]) -> dict[str, Any]:
    """Queue a warehouse movement CloudEvent exactly as if it had come over the broker.

    The outbox row takes the CloudEvent's id, so the relay publishes it with that
    ``message_id`` and the consumer's inbox applies it once, however it arrived. The
    same body twice is accepted twice and queued once.
    """
    data = dict(envelope["data"])
    if data.get("timestamp") is None and envelope.get("time") is not None:
        data["timestamp"] = envelope["time"]  # keep the side's time when data omits it
    accepted = {"status": "accepted", "id": envelope["id"], "movement_id": data["movement_id"]}
    if db.session.get(OutboxMessage, envelope["id"]) is not None:
        return accepted
    try:
        record_event(
            f"stock.movement.{data['event']}",
            envelope.get("subject") or data["movement_id"],
            jsonable(data),
            source=envelope["source"],
            event_id=envelope["id"],
        )
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # the same body, concurrently: already queued
    return accepted


# --- the consumer: carhub.stock ----------------------------------------------------------


def _no_autoflush(handler: Callable[[Event], None]) -> Callable[[Event], None]:
    """Run a handler without autoflush: its statements touch only the stock tables (Core),
    never the pending inbox/outbox objects, so flushing those before every statement
    would only cost a round trip each and undo the consumer's one multi-row INSERT per
    batch."""

    @functools.wraps(handler)
    def handle(event: Event) -> None:
        with db.session.no_autoflush:
            handler(event)

    return handle


@_no_autoflush
def handle_command(event: Event) -> None:
    """Apply an increase or decrease once per command_id; a decrease below zero is rejected."""
    message = _load(COMMAND_MESSAGES, event)
    action = event.type.rsplit(".", 1)[-1]
    if message.get("action", action) != action:
        raise InvalidMessage(f"action {message['action']!r} arrived as {event.type!r}")
    command_id = message.get("command_id") or event.id
    actor = event.source
    claimed = _claim_command(command_id, event.id, actor)
    if claimed is None:
        # Not written by our HTTP door (a bare command from outside): write it now.
        db.session.execute(
            _insert(commands)
            .values(
                id=command_id,
                action=action,
                sku=message["sku"],
                qty=message["qty"],
                warehouse_id=message["warehouse_id"],
                status="pending",
                source=event.source,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing()
        )
        claimed = _claim_command(command_id, event.id, actor)
        if claimed is None:
            return  # this command_id was applied (or rejected) before: nothing to do
    delta = claimed.qty if claimed.action == "increase" else -claimed.qty
    change = {"reason": claimed.action, "message_id": event.id, "command_id": command_id}
    if claimed.qty_after is not None:  # applied and logged by the claim itself (PostgreSQL)
        _announce_change(claimed.warehouse_id, claimed.sku, delta, claimed.qty_after, **change)
        return
    qty_after = _change_stock(claimed.warehouse_id, claimed.sku, delta)
    if qty_after is None:
        db.session.execute(
            update(commands)
            .where(commands.c.id == command_id)
            .values(status="rejected", reason=REJECTED_INSUFFICIENT, applied_at=None)
        )
        _record_rejection(
            command_id=command_id,
            action=claimed.action,
            sku=claimed.sku,
            qty=claimed.qty,
            warehouse_id=claimed.warehouse_id,
            issued_by=claimed.issued_by,
        )
        return
    _log_change(claimed.warehouse_id, claimed.sku, delta, qty_after, actor=claimed.actor, **change)
    _announce_change(claimed.warehouse_id, claimed.sku, delta, qty_after, **change)


def _claim_command(command_id: str, message_id: str, source: str) -> Any:
    """Take a pending command (row-locked until commit); None if absent or decided.

    On PostgreSQL the same statement also applies the change to an existing stock level
    when it can and writes its ledger row (``qty_after`` set): one round trip instead
    of three on the consumer's hot path. ``qty_after`` None means "not applied yet"
    (a new sku, or not enough stock): the caller takes the step-by-step path.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        # psycopg itself, on the session's connection and in its transaction: SQLAlchemy's
        # statement and result machinery cost more than the statement on the consumer's
        # hottest path (bench/stock.py: 1.0x -> 1.17x the bare loop).
        params = {"command_id": command_id, "message_id": message_id, "source": source, "ledger_id": new_id()}
        row = _fetch_one_on_driver(CLAIM_AND_APPLY, {**params, "now": utcnow()})
        return _Claimed(*row) if row else None
    return db.session.execute(
        update(commands)
        .where(commands.c.id == command_id, commands.c.status == "pending")
        .values(status="applied", applied_at=utcnow())
        .returning(
            commands.c.action,
            commands.c.sku,
            commands.c.qty,
            commands.c.warehouse_id,
            commands.c.issued_by,
            func.coalesce(commands.c.issued_by, commands.c.source, source).label("actor"),
            null().label("qty_after"),
        )
    ).first()


# One statement (data-modifying CTEs see one snapshot; the level's UPDATE re-checks its
# WHERE on the locked row, so concurrent decreases still cannot oversell). psycopg
# placeholders: it runs on the driver connection (see ``_claim_command``).
CLAIM_AND_APPLY = """
    WITH claimed AS (
        UPDATE stock_commands SET status = 'applied', applied_at = %(now)s
        WHERE id = %(command_id)s AND status = 'pending'
        RETURNING action, sku, qty, warehouse_id, issued_by,
                  coalesce(issued_by, source, %(source)s) AS actor,
                  CASE WHEN action = 'increase' THEN qty ELSE -qty END AS delta
    ), changed AS (
        UPDATE stock_levels AS level SET qty = level.qty + claimed.delta, updated_at = %(now)s
        FROM claimed
        WHERE level.warehouse_id = claimed.warehouse_id AND level.sku = claimed.sku
          AND level.qty + claimed.delta >= 0
        RETURNING level.qty
    ), logged AS (
        INSERT INTO stock_ledger (id, warehouse_id, sku, delta, qty_after, reason, actor,
                                  command_id, movement_id, message_id, created_at)
        SELECT %(ledger_id)s, claimed.warehouse_id, claimed.sku, claimed.delta, changed.qty, claimed.action,
               claimed.actor, %(command_id)s, NULL, %(message_id)s, %(now)s
        FROM claimed CROSS JOIN changed
    )
    SELECT claimed.action, claimed.sku, claimed.qty, claimed.warehouse_id, claimed.issued_by, claimed.actor,
           changed.qty AS qty_after
    FROM claimed LEFT JOIN changed ON true
    """
_Claimed = namedtuple("_Claimed", "action sku qty warehouse_id issued_by actor qty_after")


def _fetch_one_on_driver(sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """One row of ``sql`` run by psycopg on the session's connection, in its transaction.

    Errors come out as SQLAlchemy raises them (IntegrityError, OperationalError, ...),
    and a lost connection is invalidated, so callers and the consumer's retry rules
    cannot tell this path from ``session.execute``.
    """
    connection = db.session.connection()
    try:
        return connection.connection.driver_connection.execute(sql, params).fetchone()
    except psycopg.Error as error:
        lost = connection.dialect.is_disconnect(error, connection.connection, None)
        if lost:
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql, params, error, psycopg.Error, connection_invalidated=lost, dialect=connection.dialect
        ) from error


@_no_autoflush
def handle_movement(event: Event) -> None:
    """Record one side of a movement once; a departure takes stock, an arrival adds it."""
    data = _load(MOVEMENT_MESSAGES, event)
    side_event = event.type.rsplit(".", 1)[-1]
    if data["event"] != side_event:
        raise InvalidMessage(f"a {data['event']!r} movement arrived as {event.type!r}")
    movement_id, sku, quantity = data["movement_id"], data["product_id"], data["quantity"]
    at: datetime = data.get("timestamp") or event.time or utcnow()
    side = "source" if side_event == "departure" else "destination"
    db.session.execute(_insert(movements).values(id=movement_id, sku=sku, created_at=utcnow()).on_conflict_do_nothing())
    claimed = db.session.execute(
        update(movements)
        .where(
            movements.c.id == movement_id,
            movements.c.sku == sku,
            movements.c[f"{side}_quantity"].is_(None),
        )
        .values(
            {
                f"{side}_warehouse_id": data["warehouse_id"],
                f"{side}_at": at,
                f"{side}_quantity": quantity,
                f"{side}_status": "applied",
            }
        )
    ).rowcount
    if not claimed:
        known_sku = db.session.scalar(select(movements.c.sku).where(movements.c.id == movement_id))
        if known_sku != sku:
            raise InvalidMessage(f"movement {movement_id} is of sku {known_sku!r}, not {sku!r}")
        return  # this side of the movement was recorded before
    delta = quantity if side_event == "arrival" else -quantity
    qty_after = _change_stock(data["warehouse_id"], sku, delta)
    if qty_after is None:
        db.session.execute(
            update(movements).where(movements.c.id == movement_id).values({f"{side}_status": "rejected"})
        )
        _record_rejection(
            command_id=None,
            action=side_event,
            sku=sku,
            qty=quantity,
            warehouse_id=data["warehouse_id"],
            issued_by=None,
            movement_id=movement_id,
        )
        return
    _record_change(
        data["warehouse_id"],
        sku,
        delta,
        qty_after,
        reason=side_event,
        actor=event.source,
        message_id=event.id,
        movement_id=movement_id,
    )


def _ignore_own_rejection(event: Event) -> None:
    """``stock.command.rejected`` is ours, for carhub.notifications; the binding
    ``stock.command.#`` also brings it to carhub.stock, where there is nothing to do."""


def _change_stock(warehouse_id: str, sku: str, delta: int) -> int | None:
    """Add ``delta`` to a stock level and return the new qty; None if it would go below 0."""
    now = utcnow()
    where = and_(levels.c.warehouse_id == warehouse_id, levels.c.sku == sku)
    if delta < 0:
        # The WHERE is re-checked on the locked row: concurrent decreases cannot oversell.
        return db.session.execute(
            update(levels)
            .where(where, levels.c.qty >= -delta)
            .values(qty=levels.c.qty + delta, updated_at=now)
            .returning(levels.c.qty)
        ).scalar()
    updated = db.session.execute(
        update(levels).where(where).values(qty=levels.c.qty + delta, updated_at=now).returning(levels.c.qty)
    ).scalar()
    if updated is not None:
        return updated
    # A new (warehouse, sku): create it; a concurrent creator turns this into an add.
    db.session.execute(_insert(warehouses).values(id=warehouse_id, created_at=now).on_conflict_do_nothing())
    statement = _insert(levels).values(warehouse_id=warehouse_id, sku=sku, qty=delta, updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[levels.c.warehouse_id, levels.c.sku],
        set_={"qty": levels.c.qty + statement.excluded.qty, "updated_at": statement.excluded.updated_at},
    )
    return db.session.execute(statement.returning(levels.c.qty)).scalar_one()


def _record_change(
    warehouse_id: str,
    sku: str,
    delta: int,
    qty_after: int,
    *,
    reason: str,
    actor: str | None,
    message_id: str,
    command_id: str | None = None,
    movement_id: str | None = None,
) -> None:
    """The ledger row, the ``stock.changed`` event and the cache invalidations of a change."""
    where = {"reason": reason, "message_id": message_id, "command_id": command_id, "movement_id": movement_id}
    _log_change(warehouse_id, sku, delta, qty_after, actor=actor, **where)
    _announce_change(warehouse_id, sku, delta, qty_after, **where)


def _log_change(
    warehouse_id: str,
    sku: str,
    delta: int,
    qty_after: int,
    *,
    reason: str,
    actor: str | None,
    message_id: str,
    command_id: str | None = None,
    movement_id: str | None = None,
) -> None:
    """The append-only ledger row: who, what, why, which command or message."""
    db.session.execute(
        insert(ledger).values(
            id=new_id(),
            warehouse_id=warehouse_id,
            sku=sku,
            delta=delta,
            qty_after=qty_after,
            reason=reason,
            actor=actor,
            command_id=command_id,
            movement_id=movement_id,
            message_id=message_id,
            created_at=utcnow(),
        )
    )


def _announce_change(
    warehouse_id: str,
    sku: str,
    delta: int,
    qty_after: int,
    *,
    reason: str,
    message_id: str,
    command_id: str | None = None,
    movement_id: str | None = None,
) -> None:
    """``stock.changed`` in the outbox, and the cached reads dropped once it commits."""
    record_event(
        "stock.changed",
        sku,  # the subject column holds 128 characters; the warehouse is in the data
        {
            "warehouse_id": warehouse_id,
            "sku": sku,
            "qty": qty_after,
            "delta": delta,
            "reason": reason,
            "command_id": command_id,
            "movement_id": movement_id,
        },
    )
    cache.invalidate_after_commit(level_key(warehouse_id, sku))
    cache.bump_after_commit(ITEMS_NAMESPACE)


def _record_rejection(**data: Any) -> None:
    record_event(
        "stock.command.rejected",
        data["command_id"] or data.get("movement_id"),
        {**data, "reason": REJECTED_INSUFFICIENT},
    )


def _load(schema: Schema, event: Event) -> dict[str, Any]:
    """Read a message tolerantly (unknown fields ignored) but validate what we use."""
    try:
        return schema.load(event.data if isinstance(event.data, dict) else dict(event.data))  # type: ignore[return-value]
    except (ValidationError, TypeError, ValueError) as exc:
        detail = exc.messages if isinstance(exc, ValidationError) else str(exc)
        raise InvalidMessage(f"invalid {event.type} message: {detail}") from exc


def _insert(table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (PostgreSQL and SQLite alike)."""
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for {dialect}")  # pragma: no cover


# --- notifications: carhub.notifications ---------------------------------------------------


def _notify_rejected(event: Event) -> None:
    """Tell the staff user who issued a command that it was rejected (movements: nobody)."""
    data = event.data
    where = data.get("warehouse_id") or MAIN_WAREHOUSE
    notify(
        data.get("issued_by"),
        event,
        "Stock command rejected",
        f"{data.get('action')} {data.get('qty')} of {data.get('sku')} in {where}: not enough stock",
        data.get("command_id"),
    )


# routing key -> handler, for carhub.stock (see services/handlers.py)
HANDLERS: dict[str, Callable[[Event], None]] = {
    "stock.command.increase": handle_command,
    "stock.command.decrease": handle_command,
    "stock.command.rejected": _ignore_own_rejection,
    "stock.movement.arrival": handle_movement,
    "stock.movement.departure": handle_movement,
}
# event type -> handler that writes notifications, for carhub.notifications
NOTIFICATIONS: dict[str, Callable[[Event], None]] = {
    "stock.command.rejected": _notify_rejected,
}
