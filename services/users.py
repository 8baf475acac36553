"""Accounts: registration, sign-in and the admin that must exist at start."""

from __future__ import annotations

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

from extensions import db
from models.users import ROLES, User
from services.errors import Conflict, InvalidInput, NotFound, Unauthorized

# Argon2id, RFC 9106 low-memory profile. Tests may switch to the cheapest profile.
_HASHERS = {
    "default": PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY),
    "fast": PasswordHasher.from_parameters(profiles.CHEAPEST),
}
# A hash to verify against when the email is unknown, so both cases take the same time.
_DUMMY_HASH = _HASHERS["default"].hash("carhub-timing-equaliser")


def _hasher() -> PasswordHasher:
    return _HASHERS[current_app.config.get("PASSWORD_HASH_PROFILE", "default")]


def normalise_email(email: str) -> str:
    return email.strip().lower()


def get_user(user_id: str) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


_USER_EXISTS = select(User.id).where(User.id == bindparam("user_id")).execution_options(autoflush=False)


def exists(user_id: str) -> bool:
    """Whether the user is there, without loading it or flushing what the caller has pending."""
    return db.session.scalar(_USER_EXISTS, {"user_id": user_id}) is not None


def find_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == normalise_email(email)))


def create_user(email: str, password: str, full_name: str, phone: str | None = None, role: str = "customer") -> User:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}", errors={"role": [f"Must be one of {', '.join(ROLES)}."]})
    email = normalise_email(email)
    if find_by_email(email) is not None:
        raise Conflict(f"email {email} is already registered")
    user = User(email=email, password_hash=_hasher().hash(password), full_name=full_name, phone=phone, role=role)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError as exc:  # a concurrent registration won the race
        db.session.rollback()
        raise Conflict(f"email {email} is already registered") from exc
    return user


def authenticate(email: str, password: str) -> User:
    user = find_by_email(email)
    try:
        _hasher().verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None:
        raise Unauthorized("wrong email or password")
    return user


def ensure_admin(email: str, password: str) -> User:
    """Make sure an admin with these credentials exists (idempotent; used at start)."""
    user = find_by_email(email)
    if user is None:
        return create_user(email, password, full_name="Administrator", role="admin")
    if user.role != "admin" or not _verifies(user, password):
        user.role = "admin"
        user.password_hash = _hasher().hash(password)
        db.session.commit()
    return user


def _verifies(user: User, password: str) -> bool:
    try:
        return _hasher().verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def count_users() -> int:
    return db.session.scalar(select(func.count()).select_from(User)) or 0
