"""Every model, imported once so that metadata (and Alembic) sees all tables."""

from models import bonuses, cart, catalogue, fines, orders, payments, stock, tickets  # noqa: F401 - tables
from models.cars import Car
from models.messaging import InboxMessage, OutboxMessage
from models.notifications import Notification
from models.users import User

__all__ = ["Car", "InboxMessage", "Notification", "OutboxMessage", "User"]
