"""Tickets: create and list with each filter, paging under equal timestamps, the ownership
matrix, the status lifecycle, messages, events and notifications (exactly once)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

from extensions import db
from models.messaging import OutboxMessage
from models.notifications import Notification
from models.tickets import Ticket, TicketCount
from services import tickets as tickets_service
from tests.conftest import make_user
from tests.messaging_helpers import deliver, drain_outbox, event_from_outbox

URL = "/api/v1/tickets"


def open_ticket(api, subject="Brakes squeak", description="Since Monday.", **extra):
    response = api.post(URL, json={"subject": subject, "description": description, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def events(type_):
    return list(db.session.scalars(select(OutboxMessage).where(OutboxMessage.type == type_)))


def notifications_of(user_id):
    query = select(Notification).where(Notification.user_id == user_id).order_by(Notification.created_at)
    return list(db.session.scalars(query))


# --- create ----------------------------------------------------------------------------


def test_create_returns_the_ticket_with_the_creators_name(customer):
    response = customer.post(URL, json={"subject": "Oil leak", "description": "A puddle every morning."})
    assert response.status_code == 201
    ticket = response.get_json()
    assert {k: ticket[k] for k in ("user_id", "user_name", "subject", "description", "status")} == {
        "user_id": customer.user["id"],
        "user_name": "Carla Customer",
        "subject": "Oil leak",
        "description": "A puddle every morning.",
        "status": "open",
    }
    uuid.UUID(ticket["id"])
    assert ticket["created_at"].endswith(("Z", "+00:00"))
    assert response.headers["Location"].endswith(f"{URL}/{ticket['id']}")
    assert response.headers["ETag"]
    [event] = events("ticket.created")
    assert event.subject == ticket["id"] and event.data["user_name"] == "Carla Customer"


def test_create_with_a_car_and_with_an_unknown_car(customer, staff):
    car = staff.post("/api/v1/cars", json={"vin": "1HGCM82633A004352", "make": "Lada", "model": "Niva", "year": 2019})
    assert car.status_code == 201
    ticket = open_ticket(customer, car_id=car.get_json()["id"])
    assert ticket["car_id"] == car.get_json()["id"]

    unknown = customer.post(URL, json={"subject": "x", "description": "y", "car_id": str(uuid.uuid4())})
    assert unknown.status_code == 422
    assert unknown.content_type == "application/problem+json"
    assert "car_id" in unknown.get_json()["errors"]
    assert db.session.scalar(select(func.count()).select_from(Ticket)) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"subject": "", "description": "y"},
        {"subject": "x"},
        {"subject": "x", "description": "y", "car_id": "not-a-uuid"},
        {"subject": "x", "description": "y", "status": "closed"},
        {"subject": "x" * 201, "description": "y"},
    ],
)
def test_invalid_bodies_are_422(customer, body):
    response = customer.post(URL, json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"]


# --- list and filters ------------------------------------------------------------------


def test_list_filters_by_user_name_and_status(customer, other_customer, staff):
    mine = [open_ticket(customer, subject=f"mine {i}") for i in range(3)]
    theirs = [open_ticket(other_customer, subject=f"theirs {i}") for i in range(2)]
    assert staff.patch(f"{URL}/{mine[0]['id']}", json={"status": "in_progress"}).status_code == 200

    def ids(api, query=""):
        body = api.get(f"{URL}{query}").get_json()
        assert body["total"] == len(body["items"])
        return [item["id"] for item in body["items"]]

    everything = ids(staff)
    assert set(everything) == {t["id"] for t in mine + theirs}
    assert everything[0] == theirs[-1]["id"]  # newest first
    assert set(ids(staff, "?user_name=Carla%20Customer")) == {t["id"] for t in mine}
    assert set(ids(staff, "?user_name=Oscar%20Other")) == {t["id"] for t in theirs}
    assert ids(staff, "?user_name=Carla") == []  # an exact name, not a prefix
    assert ids(staff, "?status=in_progress") == [mine[0]["id"]]
    assert set(ids(staff, "?status=open")) == {t["id"] for t in mine[1:] + theirs}
    assert set(ids(staff, "?user_name=Carla%20Customer&status=open")) == {t["id"] for t in mine[1:]}
    assert ids(staff, "?status=closed") == []

    # A customer's list is their own, whatever they filter by.
    assert set(ids(customer)) == {t["id"] for t in mine}
    assert ids(customer, "?user_name=Oscar%20Other") == []
    assert ids(customer, "?status=in_progress") == [mine[0]["id"]]
    assert set(ids(other_customer)) == {t["id"] for t in theirs}


@pytest.mark.parametrize("query", ["?status=pending", "?page=0", "?size=101", "?user_name="])
def test_bad_list_arguments_are_422(staff, query):
    assert staff.get(f"{URL}{query}").status_code == 422


def crawl(api, size, query=""):
    """Every page from 1 until an empty one; checks the envelope on the way."""
    seen, page, total = [], 1, None
    while True:
        body = api.get(f"{URL}?page={page}&size={size}{query}").get_json()
        assert body["size"] == size and body["page"] == page
        total = body["total"] if total is None else total
        assert body["total"] == total
        if not body["items"]:
            return seen, total
        seen += [item["id"] for item in body["items"]]
        page += 1


def newest_first():
    rows = db.session.execute(select(Ticket.id, Ticket.created_at)).all()
    return [row.id for row in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]


@pytest.mark.parametrize("seek", [False, True], ids=["skip", "seek"])
def test_paging_is_stable_under_equal_timestamps(app, customer, staff, monkeypatch, seek):
    """Seven tickets share one created_at: the id breaks the tie, and every page (read
    from the newest side, from the oldest side near the end, or sought from a remembered
    neighbour's key) agrees on one order."""
    if seek:  # remember page edges and seek from them on every page, not only far ones
        monkeypatch.setattr(tickets_service, "SEEK_AFTER", 0)
    created = [open_ticket(customer, subject=f"t{i}")["id"] for i in range(11)]
    same = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    db.session.execute(update(Ticket).where(Ticket.id.in_(created[2:9])).values(created_at=same))
    db.session.commit()
    expected = newest_first()

    for api, query in ((staff, ""), (staff, "&user_name=Carla%20Customer"), (customer, ""), (staff, "&status=open")):
        for size in (1, 2, 3, 4, 10, 11, 100):
            for _ in range(2):  # the second crawl seeks from what the first remembered
                assert crawl(api, size, query) == (expected, 11), (query, size)
            again = api.get(f"{URL}?page=2&size=3{query}").get_json()["items"]
            assert [item["id"] for item in again] == expected[3:6]
            backwards = [api.get(f"{URL}?page={p}&size=2{query}").get_json()["items"] for p in (6, 5, 4, 3, 2, 1)]
            assert [i["id"] for items in reversed(backwards) for i in items] == expected


def test_remembered_positions_end_with_a_write(app, customer, staff, monkeypatch):
    """A new ticket or a status change shifts every position: a crawl after it must not
    seek from keys remembered before it."""
    monkeypatch.setattr(tickets_service, "SEEK_AFTER", 0)
    for i in range(6):
        open_ticket(customer, subject=f"t{i}")
    assert crawl(staff, 2) == (newest_first(), 6)
    newest = open_ticket(customer, subject="newest")
    assert crawl(staff, 2) == (newest_first(), 7)
    assert crawl(staff, 2, "&status=open")[0][0] == newest["id"]
    staff.patch(f"{URL}/{newest['id']}", json={"status": "in_progress"})
    assert crawl(staff, 2, "&status=open") == ([i for i in newest_first() if i != newest["id"]], 6)


def test_counts_follow_creates_and_status_changes(app, customer, other_customer, staff):
    """``total`` for staff comes from ticket_counts: it must agree with a real count."""
    tickets = [open_ticket(customer) for _ in range(3)] + [open_ticket(other_customer)]
    staff.patch(f"{URL}/{tickets[0]['id']}", json={"status": "resolved"})
    staff.patch(f"{URL}/{tickets[0]['id']}", json={"status": "closed"})
    staff.patch(f"{URL}/{tickets[1]['id']}", json={"status": "in_progress"})
    staff.patch(f"{URL}/{tickets[1]['id']}", json={"status": "open"})  # back to the queue
    for name in (None, "Carla Customer", "Oscar Other", "Nobody"):
        for status in (None, "open", "in_progress", "resolved", "closed"):
            query = select(func.count()).select_from(Ticket)
            if name:
                query = query.where(Ticket.user_name == name)
            if status:
                query = query.where(Ticket.status == status)
            params = {k: v for k, v in (("user_name", name), ("status", status)) if v}
            body = staff.get(URL, query_string=params).get_json()
            assert body["total"] == db.session.scalar(query), params
    assert db.session.scalar(select(func.min(TicketCount.n))) >= 0


# --- ownership matrix ------------------------------------------------------------------


def test_ownership_matrix(customer, other_customer, staff, anonymous):
    ticket = open_ticket(customer)
    one, messages = f"{URL}/{ticket['id']}", f"{URL}/{ticket['id']}/messages"

    # anonymous: 401 everywhere
    for response in (
        anonymous.get(URL),
        anonymous.post(URL, json={"subject": "x", "description": "y"}),
        anonymous.get(one),
        anonymous.patch(one, json={"status": "in_progress"}),
        anonymous.get(messages),
        anonymous.post(messages, json={"body": "hi"}),
    ):
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"

    # another customer: 404 for the ticket and its messages, never 403; 403 for PATCH (a role rule)
    assert other_customer.get(one).status_code == 404
    assert other_customer.get(messages).status_code == 404
    assert other_customer.post(messages, json={"body": "let me in"}).status_code == 404
    assert other_customer.get(URL).get_json()["items"] == []
    assert other_customer.patch(one, json={"status": "in_progress"}).status_code == 403

    # the owner: reads and writes, but may not change the status
    assert customer.get(one).status_code == 200
    assert customer.post(messages, json={"body": "any news?"}).status_code == 201
    assert customer.get(messages).get_json()["total"] == 1
    assert [t["id"] for t in customer.get(URL).get_json()["items"]] == [ticket["id"]]
    assert customer.patch(one, json={"status": "in_progress"}).status_code == 403

    # staff: everything
    assert staff.get(one).get_json()["id"] == ticket["id"]
    assert staff.post(messages, json={"body": "looking into it"}).status_code == 201
    assert staff.get(messages).get_json()["total"] == 2
    assert [t["id"] for t in staff.get(URL).get_json()["items"]] == [ticket["id"]]
    assert staff.patch(one, json={"status": "in_progress"}).status_code == 200

    # an unknown ticket is the same 404 as another customer's
    missing = f"{URL}/{uuid.uuid4()}"
    assert customer.get(missing).status_code == 404
    assert staff.get(missing).status_code == 404
    assert staff.patch(missing, json={"status": "in_progress"}).status_code == 404
    assert staff.get(f"{missing}/messages").status_code == 404
    assert staff.post(f"{missing}/messages", json={"body": "?"}).status_code == 404
    # nothing the other customer tried left a trace
    assert len(events("ticket.message_added")) == 2
    assert len(events("ticket.updated")) == 1


def test_staff_may_open_tickets_too(staff, admin):
    ticket = open_ticket(staff)
    assert ticket["user_name"] == "Stan Staff"
    assert admin.get(f"{URL}/{ticket['id']}").status_code == 200


# --- status lifecycle ------------------------------------------------------------------

ALLOWED = {
    ("open", "in_progress"),
    ("open", "resolved"),
    ("in_progress", "open"),
    ("in_progress", "resolved"),
    ("resolved", "open"),
    ("resolved", "closed"),
}
PATH_TO = {
    "open": [],
    "in_progress": ["in_progress"],
    "resolved": ["in_progress", "resolved"],
    "closed": ["in_progress", "resolved", "closed"],
}


@pytest.mark.parametrize("start", ["open", "in_progress", "resolved", "closed"])
def test_every_transition_is_allowed_or_409(customer, staff, start):
    statuses = ("open", "in_progress", "resolved", "closed")
    for target in statuses:
        if target == start:
            continue
        ticket = open_ticket(customer)
        one = f"{URL}/{ticket['id']}"
        for step in PATH_TO[start]:
            assert staff.patch(one, json={"status": step}).status_code == 200
        response = staff.patch(one, json={"status": target})
        if (start, target) in ALLOWED:
            assert response.status_code == 200, (start, target)
            assert response.get_json()["status"] == target
        else:
            assert response.status_code == 409, (start, target)
            assert response.content_type == "application/problem+json"
            assert staff.get(one).get_json()["status"] == start  # unchanged


def test_full_lifecycle_with_reopen_and_events(customer, staff):
    ticket = open_ticket(customer)
    one = f"{URL}/{ticket['id']}"
    for status in ("in_progress", "resolved", "open", "in_progress", "resolved", "closed"):
        response = staff.patch(one, json={"status": status})
        assert response.status_code == 200 and response.get_json()["status"] == status
    updates = events("ticket.updated")
    assert [(e.data["old_status"], e.data["new_status"]) for e in sorted(updates, key=lambda e: e.data["version"])] == [
        ("open", "in_progress"),
        ("in_progress", "resolved"),
        ("resolved", "open"),
        ("open", "in_progress"),
        ("in_progress", "resolved"),
        ("resolved", "closed"),
    ]
    assert all(e.data["changed_by"] == staff.user["id"] and e.data["changed_by_staff"] for e in updates)
    # closed is terminal
    assert staff.patch(one, json={"status": "open"}).status_code == 409
    assert staff.patch(one, json={"assignee_id": staff.user["id"]}).status_code == 409


def test_same_status_is_a_harmless_no_op(customer, staff):
    ticket = open_ticket(customer)
    response = staff.patch(f"{URL}/{ticket['id']}", json={"status": "open"})
    assert response.status_code == 200 and response.get_json()["status"] == "open"
    assert events("ticket.updated") == []


def test_patch_needs_something_valid(customer, staff):
    one = f"{URL}/{open_ticket(customer)['id']}"
    assert staff.patch(one, json={}).status_code == 422
    assert staff.patch(one, json={"status": "done"}).status_code == 422
    assert staff.patch(one, json={"subject": "rewritten"}).status_code == 422
    assert staff.patch(one, json={"assignee_id": "nope"}).status_code == 422


def test_assignee_must_be_staff(client, customer, other_customer, staff, admin):
    one = f"{URL}/{open_ticket(customer)['id']}"
    for not_staff in (other_customer.user["id"], customer.user["id"], str(uuid.uuid4())):
        response = staff.patch(one, json={"assignee_id": not_staff})
        assert response.status_code == 422
        assert "assignee_id" in response.get_json()["errors"]
    assert staff.patch(one, json={"assignee_id": admin.user["id"]}).get_json()["assignee_id"] == admin.user["id"]
    assigned = staff.patch(one, json={"assignee_id": staff.user["id"], "status": "in_progress"}).get_json()
    assert assigned["assignee_id"] == staff.user["id"] and assigned["status"] == "in_progress"
    assert staff.patch(one, json={"assignee_id": None}).get_json()["assignee_id"] is None


def test_if_match_on_patch(customer, staff):
    one = f"{URL}/{open_ticket(customer)['id']}"
    tag = staff.get(one).headers["ETag"]
    changed = staff.patch(one, json={"status": "in_progress"}, headers={"If-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    stale = staff.patch(one, json={"status": "resolved"}, headers={"If-Match": tag})
    assert stale.status_code == 412
    assert staff.get(one).get_json()["status"] == "in_progress"


# --- messages --------------------------------------------------------------------------


def test_messages_thread_oldest_first_and_409_when_closed(customer, staff):
    ticket = open_ticket(customer)
    messages = f"{URL}/{ticket['id']}/messages"
    first = customer.post(messages, json={"body": "It squeaks."})
    assert first.status_code == 201
    body = first.get_json()
    assert body["author_id"] == customer.user["id"] and body["author_is_staff"] is False
    assert body["ticket_id"] == ticket["id"] and body["body"] == "It squeaks."
    reply = staff.post(messages, json={"body": "Bring it in on Tuesday."}).get_json()
    assert reply["author_is_staff"] is True and reply["author_name"] == "Stan Staff"

    listed = customer.get(messages).get_json()
    assert listed["total"] == 2 and [m["id"] for m in listed["items"]] == [body["id"], reply["id"]]
    assert customer.get(f"{messages}?size=1&page=2").get_json()["items"][0]["id"] == reply["id"]

    assert customer.post(messages, json={"body": ""}).status_code == 422
    assert customer.post(messages, json={}).status_code == 422

    for status in ("resolved", "closed"):
        staff.patch(f"{URL}/{ticket['id']}", json={"status": status})
    for api in (customer, staff):
        closed = api.post(messages, json={"body": "one more thing"})
        assert closed.status_code == 409
        assert closed.content_type == "application/problem+json"
    assert customer.get(messages).get_json()["total"] == 2  # still readable

    [added, _] = sorted(events("ticket.message_added"), key=lambda e: e.data["author_is_staff"])
    assert added.data["author_id"] == customer.user["id"] and added.data["author_is_staff"] is False


# --- notifications ---------------------------------------------------------------------


def test_staff_reply_notifies_the_owner_exactly_once_even_if_delivered_twice(customer, staff):
    ticket = open_ticket(customer, subject="Strange noise")
    staff.post(f"{URL}/{ticket['id']}/messages", json={"body": "We will call you."})
    delivered = drain_outbox()
    assert {e.type for e in delivered} == {"ticket.created", "ticket.message_added"}

    [reply] = events("ticket.message_added")
    assert deliver("carhub.notifications", event_from_outbox(reply)) is False  # a redelivery
    [note] = notifications_of(customer.user["id"])
    assert note.kind == "ticket.message_added" and note.reference == ticket["id"]
    assert notifications_of(staff.user["id"]) == []

    listed = customer.get("/api/v1/notifications").get_json()
    assert listed["total"] == 1
    assert listed["items"][0]["reference"] == ticket["id"]
    assert "Strange noise" in listed["items"][0]["title"]
    assert listed["items"][0]["read"] is False
    read = customer.post(f"/api/v1/notifications/{listed['items'][0]['id']}/read")
    assert read.status_code == 200 and read.get_json()["read"] is True


def test_status_change_notifies_owner_and_customer_message_notifies_assignee(customer, staff, admin):
    ticket = open_ticket(customer)
    one = f"{URL}/{ticket['id']}"
    staff.patch(one, json={"status": "in_progress", "assignee_id": admin.user["id"]})
    customer.post(f"{one}/messages", json={"body": "Any news?"})
    staff.post(f"{one}/messages", json={"body": "Parts ordered."})
    drain_outbox()
    drain_outbox()  # nothing new: no duplicates

    owner_kinds = sorted(n.kind for n in notifications_of(customer.user["id"]))
    assert owner_kinds == ["ticket.message_added", "ticket.updated"]
    assignee_kinds = sorted(n.kind for n in notifications_of(admin.user["id"]))
    assert assignee_kinds == ["ticket.message_added", "ticket.updated"]  # assigned + the customer wrote
    assert notifications_of(staff.user["id"]) == []  # nobody is told about their own action

    newest_first = customer.get("/api/v1/notifications").get_json()["items"]
    assert [n["kind"] for n in newest_first] == ["ticket.message_added", "ticket.updated"]


def test_customer_message_without_assignee_notifies_nobody(customer, staff):
    ticket = open_ticket(customer)
    customer.post(f"{URL}/{ticket['id']}/messages", json={"body": "hello?"})
    delivered = drain_outbox()
    assert len(delivered) == 2
    assert db.session.scalar(select(func.count()).select_from(Notification)) == 0


def test_every_ticket_event_has_a_notification_handler():
    from messaging.topology import queues_for
    from services.handlers import HANDLERS

    for type_ in ("ticket.created", "ticket.updated", "ticket.message_added"):
        assert queues_for(type_) == ("carhub.notifications",)
        assert type_ in HANDLERS["carhub.notifications"]


def test_a_second_customer_with_the_same_name_shares_the_filter(client, customer, staff):
    """user_name is the name at creation time: equal names list together (it is a name filter)."""
    twin = make_user(client, "customer", name="Carla Customer")
    open_ticket(customer)
    open_ticket(twin)
    body = staff.get(f"{URL}?user_name=Carla%20Customer").get_json()
    assert body["total"] == 2
    assert customer.get(URL).get_json()["total"] == 1


def test_concurrent_status_changes_one_wins_and_counts_stay_true(app, customer, staff, admin):
    """resolved -> closed and resolved -> open at once: whichever goes first, the other is
    illegal from the new state, so exactly one 200 and one 409, and the counters agree."""
    import threading

    ticket = open_ticket(customer)
    one = f"{URL}/{ticket['id']}"
    staff.patch(one, json={"status": "resolved"})
    barrier = threading.Barrier(2)
    statuses: dict[str, int] = {}

    def change(api, status):
        with app.app_context():
            barrier.wait()
            statuses[status] = api.patch(one, json={"status": status}).status_code
            db.session.remove()

    threads = [threading.Thread(target=change, args=args) for args in ((staff, "closed"), (admin, "open"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses.values()) == [200, 409], statuses
    final = staff.get(one).get_json()["status"]
    assert final == next(status for status, code in statuses.items() if code == 200)
    assert staff.get(f"{URL}?status={final}").get_json()["total"] == 1
    assert staff.get(f"{URL}?status=resolved").get_json()["total"] == 0
    assert len(events("ticket.updated")) == 2


def test_rebuild_counts_after_rows_changed_outside_the_service(app, customer, other_customer, staff):
    for api in (customer, customer, other_customer):
        open_ticket(api)
    db.session.execute(update(Ticket).where(Ticket.user_name == "Oscar Other").values(status="closed"))
    db.session.execute(TicketCount.__table__.delete())
    db.session.commit()
    assert staff.get(URL).get_json()["total"] == 0  # the counters are what totals trust

    tickets_service.rebuild_counts()
    assert staff.get(URL).get_json()["total"] == 3
    assert staff.get(f"{URL}?status=closed").get_json()["total"] == 1
    assert staff.get(f"{URL}?user_name=Carla%20Customer&status=open").get_json()["total"] == 2


def test_a_far_page_asked_again_seeks_from_the_key_just_outside_it(app, customer, staff, monkeypatch):
    """First visit: skip, and remember the key of the row just outside the page (before
    it, or after it when read from the oldest side). Second visit: seek from that key."""
    monkeypatch.setattr(tickets_service, "SEEK_AFTER", 0)
    found = []
    boundary = tickets_service._boundary

    def spy(scope, position):
        key = boundary(scope, position)
        found.append((position, key is not None))
        return key

    monkeypatch.setattr(tickets_service, "_boundary", spy)
    for i in range(9):
        open_ticket(customer, subject=f"t{i}")
    expected = newest_first()
    for page, want_position in ((2, 1), (4, 8)):  # 2: read newest-first; 4: nearer the end
        for visit in (1, 2):
            found.clear()
            body = staff.get(f"{URL}?page={page}&size=2").get_json()
            assert [item["id"] for item in body["items"]] == expected[(page - 1) * 2 : page * 2], (page, visit)
            hit = [position for position, ok in found if ok]
            assert hit == ([] if visit == 1 else [want_position]), (page, visit, found)
