"""The support desk: open tickets, talk on them, move them through their lifecycle.

Ownership is decided here, from ``viewer`` (who asks and whether they are staff): a
customer only ever sees their own tickets, and another customer's ticket is "not
found", never "forbidden", so its existence is not confirmed.

Status lifecycle (staff only), as ``TRANSITIONS`` below:

    from          may go to
    open          in_progress, resolved
    in_progress   open, resolved
    resolved      open (reopen), closed
    closed        nothing (terminal)

Besides the required moves (open -> in_progress -> resolved -> closed, and the reopen
resolved -> open), ``in_progress -> open`` (give a ticket back to the queue) and
``open -> resolved`` (a question answered at once) are allowed, because both happen
at a real desk and neither skips a state anyone relies on. Nothing changes a closed
ticket and nobody writes on it; every other move (e.g. ``open -> closed`` without
resolving, ``resolved -> in_progress``) is a 409. Setting the status a ticket already
has is a no-op 200, so a retried PATCH is harmless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm.exc import StaleDataError

from extensions import db
from models.cars import Car
from models.tickets import ALL_NAMES, Ticket, TicketCount, TicketMessage
from models.users import User
from services import cache
from services.errors import Conflict, DomainError, InvalidInput, NotFound, PreconditionFailed
from services.events import record_event
from services.notifications import notify
from services.pagination import Page

if TYPE_CHECKING:
    from services.handlers import Event

LIST_NAMESPACE = "tickets:positions"
# Far from both ends of a list, skipping index entries costs more than the few cache
# round trips that seeking from a remembered key takes; nearer, skipping is cheaper.
SEEK_AFTER = 5000

TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"in_progress", "resolved"}),
    "in_progress": frozenset({"open", "resolved"}),
    "resolved": frozenset({"open", "closed"}),
    "closed": frozenset(),
}


@dataclass(frozen=True)
class Viewer:
    """Who is asking: the signed-in user and whether they are staff (or admin)."""

    user_id: str
    is_staff: bool


@dataclass(frozen=True)
class TicketFilters:
    user_name: str | None = None
    status: str | None = None


def snapshot(ticket: Ticket) -> dict[str, Any]:
    """The ticket as plain data: what the API shows and events carry."""
    return {column.key: getattr(ticket, column.key) for column in Ticket.__table__.columns}


def message_snapshot(message: TicketMessage) -> dict[str, Any]:
    return {column.key: getattr(message, column.key) for column in TicketMessage.__table__.columns}


def etag(ticket: dict[str, Any]) -> str:
    return f'"{ticket["id"]}.{ticket["version"]}"'


# --- create and read -------------------------------------------------------------------


def create_ticket(viewer: Viewer, subject: str, description: str, car_id: str | None = None) -> dict[str, Any]:
    """Open a ticket for the caller; the creator's name is copied for the indexed filter."""
    user = db.session.get(User, viewer.user_id)
    if user is None:
        raise NotFound(f"user {viewer.user_id} not found")
    if car_id is not None and db.session.get(Car, car_id) is None:
        raise InvalidInput("car does not exist", errors={"car_id": ["Unknown car."]})
    ticket = Ticket(user_id=user.id, user_name=user.full_name, subject=subject, description=description, car_id=car_id)
    db.session.add(ticket)
    db.session.flush()
    _count(ticket.user_name, ticket.status, +1)
    data = snapshot(ticket)
    record_event("ticket.created", ticket.id, data)
    cache.bump_after_commit(LIST_NAMESPACE)
    db.session.commit()
    return data


def get_ticket(viewer: Viewer, ticket_id: str) -> dict[str, Any]:
    return snapshot(_visible(viewer, ticket_id))


def list_tickets(viewer: Viewer, filters: TicketFilters, page: int, size: int) -> Page:
    """Newest first (created_at DESC, id DESC), customers limited to their own tickets.

    Cost does not grow with the page number the way ``OFFSET`` alone does:
    the total comes from ``ticket_counts`` (staff) or a count over the caller's own
    index range (customers); a page's ids come from an index-only scan, read from the
    nearer end (a page near the end is the first page of the reversed order), and only
    the page's own rows are then fetched by primary key. Far from both ends (a crawl
    through a long list) the edges of each page served are remembered in the cache,
    so the next or previous page seeks from a key (keyset) instead of skipping rows.
    """
    conditions: list[ColumnElement[bool]] = []
    if not viewer.is_staff:
        conditions.append(Ticket.user_id == viewer.user_id)
    if filters.user_name is not None:
        conditions.append(Ticket.user_name == filters.user_name)
    if filters.status is not None:
        conditions.append(Ticket.status == filters.status)

    total = _total(filters) if viewer.is_staff else _exact_total(conditions)
    offset = (page - 1) * size
    if offset >= total:
        return Page(items=[], page=page, size=size, total=total)
    take = min(size, total - offset)
    after = total - offset - take  # rows that follow this page in newest-first order
    far = min(offset, after) >= SEEK_AFTER
    scope = _scope(viewer, filters) if far else ""
    # The page's keys from an index-only scan: seek from a remembered neighbour's key,
    # else skip from the nearer end (then also read the one row just outside the page,
    # the key a later request for this same page seeks from).
    keys = select(Ticket.id, Ticket.created_at).where(*conditions)
    position = (Ticket.created_at, Ticket.id)
    before_page = _boundary(scope, offset - 1) if far else None
    after_page = _boundary(scope, offset + take) if far and before_page is None else None
    extra = 0
    if before_page is not None:
        keys = keys.where(tuple_(*position) < tuple_(*before_page)).order_by(*(c.desc() for c in position))
    elif after_page is not None:
        keys = keys.where(tuple_(*position) > tuple_(*after_page)).order_by(*(c.asc() for c in position))
    elif after < offset:
        extra = 1 if far and after > 0 else 0
        keys = keys.order_by(*(c.asc() for c in position)).offset(after - extra)
    else:
        extra = 1 if far and offset > 0 else 0
        keys = keys.order_by(*(c.desc() for c in position)).offset(offset - extra)
    page_keys = keys.limit(take + extra).subquery("page_keys")
    # ...then only those rows, by primary key, in one round trip (a deferred join).
    rows = db.session.execute(
        select(Ticket.__table__)
        .join(page_keys, Ticket.id == page_keys.c.id)
        .order_by(page_keys.c.created_at.desc(), page_keys.c.id.desc())
    )
    items = [dict(row) for row in rows.mappings()]
    if extra and len(items) > take:  # the row outside the page: remember its key, drop it
        if after < offset:
            outside, at = items.pop(), offset + take
        else:
            outside, at = items.pop(0), offset - 1
        _remember(scope, at, (outside["created_at"], outside["id"]))
    if far and items:  # remember this page's edges for the pages beside it
        _remember(scope, offset, (items[0]["created_at"], items[0]["id"]))
        _remember(scope, offset + len(items) - 1, (items[-1]["created_at"], items[-1]["id"]))
    return Page(items=items, page=page, size=size, total=total)


def _scope(viewer: Viewer, filters: TicketFilters) -> str:
    """Which list a remembered position belongs to (a customer's list is their own)."""
    parts = [None if viewer.is_staff else viewer.user_id, filters.user_name, filters.status]
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=12).hexdigest()


def _boundary(scope: str, position: int) -> tuple[datetime, str] | None:
    """The (created_at, id) of the row at ``position`` (newest first), if remembered.

    Positions live in a cache generation that every create and status change ends
    (``bump_after_commit``), so a remembered position is one no write has shifted.
    """
    found = cache.cached_in_generation(LIST_NAMESPACE, f"{scope}:{position}", lambda: None)
    return tuple(found) if found else None  # type: ignore[return-value]


def _remember(scope: str, position: int, key: tuple[datetime, str]) -> None:
    cache.cached_in_generation(LIST_NAMESPACE, f"{scope}:{position}", lambda: list(key))


def _total(filters: TicketFilters) -> int:
    """At most four rows of ``ticket_counts``, whatever the table size."""
    query = select(func.coalesce(func.sum(TicketCount.n), 0)).where(
        TicketCount.user_name == (filters.user_name if filters.user_name is not None else ALL_NAMES)
    )
    if filters.status is not None:
        query = query.where(TicketCount.status == filters.status)
    return int(db.session.scalar(query) or 0)


def _exact_total(conditions: list[ColumnElement[bool]]) -> int:
    """A customer's own tickets: a count over their range of ``ix_tickets_user_newest``."""
    return int(db.session.scalar(select(func.count()).select_from(Ticket).where(*conditions)) or 0)


def _count(user_name: str, status: str, delta: int) -> None:
    """Move the counters of ``user_name`` and of all names, in the caller's transaction.

    Rows are touched in key order ('' sorts first), so concurrent writers lock them in
    the same order and cannot deadlock. An upsert is a single atomic statement.
    """
    for name in sorted({ALL_NAMES, user_name}):
        if delta < 0:  # the row exists: the ticket being moved was counted into it
            db.session.execute(
                update(TicketCount)
                .where(TicketCount.user_name == name, TicketCount.status == status)
                .values(n=TicketCount.n + delta)
            )
            continue
        insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        statement = insert(TicketCount).values(user_name=name, status=status, n=delta)
        statement = statement.on_conflict_do_update(
            index_elements=[TicketCount.user_name, TicketCount.status],
            set_={"n": TicketCount.n + delta},
        )
        db.session.execute(statement)


def _visible(viewer: Viewer, ticket_id: str, *, for_update: bool = False) -> Ticket:
    """The ticket if ``viewer`` may see it; another customer's ticket is simply not found."""
    query = select(Ticket).where(Ticket.id == ticket_id)
    if for_update:
        query = query.with_for_update()
    ticket = db.session.scalar(query)
    if ticket is None or (not viewer.is_staff and ticket.user_id != viewer.user_id):
        raise NotFound(f"ticket {ticket_id} not found")
    return ticket


# --- change (staff) --------------------------------------------------------------------


def update_ticket(
    viewer: Viewer, ticket_id: str, fields: dict[str, Any], if_match: str | None = None
) -> dict[str, Any]:
    """Move the status along the lifecycle and/or (un)assign a staff member."""
    ticket = _visible(viewer, ticket_id, for_update=True)
    if if_match is not None and if_match.strip() != "*" and etag(snapshot(ticket)) not in _etags(if_match):
        db.session.rollback()
        raise PreconditionFailed("the ticket has changed since you read it; read it again")
    old_status, old_assignee = ticket.status, ticket.assignee_id
    new_status = fields.get("status", old_status)
    new_assignee = fields.get("assignee_id", old_assignee)
    if new_status == old_status and new_assignee == old_assignee:
        data = snapshot(ticket)
        db.session.rollback()
        return data  # nothing to change: a retried PATCH is harmless
    try:
        _check_change(old_status, new_status, old_assignee, new_assignee)
    except DomainError:
        db.session.rollback()  # release the row lock now, not at teardown
        raise

    ticket.status, ticket.assignee_id = new_status, new_assignee
    try:
        db.session.flush()
    except StaleDataError as exc:
        db.session.rollback()
        raise Conflict("the ticket was changed concurrently; read it again") from exc
    if new_status != old_status:
        _count(ticket.user_name, old_status, -1)
        _count(ticket.user_name, new_status, +1)
        cache.bump_after_commit(LIST_NAMESPACE)  # positions in status lists have shifted
    data = snapshot(ticket)
    changed = sorted(
        name
        for name, old, new in (("status", old_status, new_status), ("assignee_id", old_assignee, new_assignee))
        if old != new
    )
    record_event(
        "ticket.updated",
        ticket.id,
        {
            **data,
            "changed": changed,
            "old_status": old_status,
            "new_status": new_status,
            "old_assignee_id": old_assignee,
            "changed_by": viewer.user_id,
            "changed_by_staff": viewer.is_staff,
        },
    )
    db.session.commit()
    return data


def _check_change(old_status: str, new_status: str, old_assignee: str | None, new_assignee: str | None) -> None:
    if old_status == "closed":
        raise Conflict("the ticket is closed; nothing about it changes any more")
    if new_status != old_status and new_status not in TRANSITIONS[old_status]:
        allowed = ", ".join(sorted(TRANSITIONS[old_status])) or "nothing"
        raise Conflict(f"a ticket cannot go from {old_status} to {new_status} (from {old_status}: {allowed})")
    if new_assignee != old_assignee and new_assignee is not None:
        assignee = db.session.get(User, new_assignee)
        if assignee is None or not assignee.is_staff:
            raise InvalidInput("the assignee must be a staff member", errors={"assignee_id": ["Not a staff user."]})


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


# --- messages --------------------------------------------------------------------------


def add_message(viewer: Viewer, ticket_id: str, body: str) -> dict[str, Any]:
    """Write on a ticket (owner or staff); a closed ticket takes no more messages.

    The ticket row is locked (PostgreSQL) so that a concurrent close and a message
    cannot interleave into "a message on a closed ticket".
    """
    ticket = _visible(viewer, ticket_id, for_update=True)
    if ticket.status == "closed":
        db.session.rollback()
        raise Conflict("the ticket is closed; open a new one")
    author = db.session.get(User, viewer.user_id)
    if author is None:
        raise NotFound(f"user {viewer.user_id} not found")
    message = TicketMessage(
        ticket_id=ticket.id,
        author_id=author.id,
        author_name=author.full_name,
        author_is_staff=author.is_staff,
        body=body,
    )
    db.session.add(message)
    db.session.flush()
    data = message_snapshot(message)
    record_event(
        "ticket.message_added",
        ticket.id,
        {
            **data,
            "message_id": message.id,
            "user_id": ticket.user_id,
            "assignee_id": ticket.assignee_id,
            "subject": ticket.subject,
            "status": ticket.status,
        },
    )
    db.session.commit()
    return data


def list_messages(viewer: Viewer, ticket_id: str, page: int, size: int) -> Page:
    """The conversation, oldest first (created_at, id): it reads like a thread."""
    _visible(viewer, ticket_id)
    condition = TicketMessage.ticket_id == ticket_id
    total = int(db.session.scalar(select(func.count()).select_from(TicketMessage).where(condition)) or 0)
    query = select(TicketMessage).where(condition).order_by(TicketMessage.created_at, TicketMessage.id)
    items = [message_snapshot(m) for m in db.session.scalars(query.limit(size).offset((page - 1) * size))]
    return Page(items=items, page=page, size=size, total=total)


def rebuild_counts() -> None:
    """Recount ``ticket_counts`` from the tickets after rows were changed outside this
    service (a bulk load, a manual fix); also forgets every remembered list position."""
    counts = TicketCount.__table__
    db.session.execute(counts.delete())
    per_name = select(Ticket.user_name, Ticket.status, func.count()).group_by(Ticket.user_name, Ticket.status)
    all_names = select(db.literal(ALL_NAMES), Ticket.status, func.count()).group_by(Ticket.status)
    for query in (per_name, all_names):
        db.session.execute(counts.insert().from_select(["user_name", "status", "n"], query))
    cache.bump_after_commit(LIST_NAMESPACE)
    db.session.commit()


# --- event -> notification rules (queue carhub.notifications) --------------------------
# They run inside the consumer's transaction (inbox row + notification commit
# together) and never commit themselves.


def _on_created(event: Event) -> None:
    """Nobody to tell yet (no assignee at creation), but the type must be handled:
    the queue binds ``ticket.#`` and an unhandled type would be dead-lettered."""


def _on_updated(event: Event) -> None:
    """Staff moved the status: tell the owner. A new assignee: tell them."""
    data = event.data
    ticket_id, subject = data.get("id"), data.get("subject", "your ticket")
    changer = data.get("changed_by")
    changed = data.get("changed") or []
    owner = data.get("user_id")
    if "status" in changed and data.get("changed_by_staff") and owner != changer:
        notify(
            owner,
            event,
            f"Your ticket is now {str(data.get('new_status', '')).replace('_', ' ')}",
            f"{subject}: {data.get('old_status')} -> {data.get('new_status')}",
            ticket_id,
        )
    assignee = data.get("assignee_id")
    if "assignee_id" in changed and assignee and assignee != changer:
        notify(assignee, event, "A ticket was assigned to you", str(subject), ticket_id)


def _on_message_added(event: Event) -> None:
    """Staff replied: tell the owner. The owner wrote: tell the assignee (if any)."""
    data = event.data
    ticket_id, subject = data.get("ticket_id"), data.get("subject", "a ticket")
    author, owner, assignee = data.get("author_id"), data.get("user_id"), data.get("assignee_id")
    excerpt = str(data.get("body", ""))[:200]
    if author == owner:
        if assignee and assignee != author:
            notify(assignee, event, f"The customer wrote on: {subject}", excerpt, ticket_id)
    elif data.get("author_is_staff"):
        notify(owner, event, f"Support replied on: {subject}", excerpt, ticket_id)


HANDLERS: dict[str, Callable[[Any], None]] = {}
NOTIFICATIONS: dict[str, Callable[[Event], None]] = {
    "ticket.created": _on_created,
    "ticket.updated": _on_updated,
    "ticket.message_added": _on_message_added,
}
