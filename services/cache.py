"""Read-through cache with explicit keys, invalidated by services after commit.

A plain "delete after commit" leaves a race: a reader that loaded the old row just
before the commit stores it just after the delete. So an invalidation writes a short
tombstone instead, and readers only fill an empty key (``add``), never over a
tombstone. Both the web workers and the consumer invalidate through here, so no read
after a successful write returns the old value, in any process.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from extensions import cache, db
from observability import CACHE_LOOKUPS

T = TypeVar("T")
log = logging.getLogger(__name__)

# Bound once: looking a label up on every read showed in bench/api.py's profile.
_HIT, _MISS = CACHE_LOOKUPS.labels("hit"), CACHE_LOOKUPS.labels("miss")

TOMBSTONE = "__carhub_invalidated__"
TOMBSTONE_SECONDS = 5


def cached(key: str, load: Callable[[], T | None], timeout: int | None = None) -> T | None:
    """Return the cached value of ``key`` or load it (a ``None`` load is not cached)."""
    try:
        value = cache.get(key)
    except Exception:  # noqa: BLE001 - a cache outage must not fail a read
        value = None
    if value is not None and value != TOMBSTONE:
        _HIT.inc()
        return value
    _MISS.inc()
    loaded = load()
    if loaded is not None and value != TOMBSTONE:
        with _cache_outage_logged("fill"):
            cache.add(key, loaded, timeout=timeout)
    return loaded


def cached_in_generation(namespace: str, key: str, load: Callable[[], T], timeout: int | None = None) -> T:
    """Cache ``load()`` under the namespace's current generation.

    For results that many writes touch (lists): a write starts a new generation
    instead of finding every key. A reader that loaded before the write stores under
    the old generation, which nobody reads again, so there is no stale window. While a
    write commits, the generation is a tombstone: readers go to the database.
    """
    generation = _generation(namespace)
    if generation == TOMBSTONE:
        return load()
    return cached(f"{namespace}:{generation}:{key}", load, timeout)  # type: ignore[return-value]


def bump_after_commit(namespace: str) -> None:
    """Start a new generation of ``namespace`` once the transaction has committed."""
    pending: set[str] = db.session.info.setdefault("cache_generations", set())
    pending.add(namespace)


def _generation(namespace: str) -> str:
    key = f"{namespace}:generation"
    try:
        generation = cache.get(key)
        if generation is None:
            cache.add(key, uuid.uuid4().hex, timeout=0)
            generation = cache.get(key)
    except Exception:  # noqa: BLE001
        generation = None
    return generation or uuid.uuid4().hex  # no cache: a generation nobody shares


def invalidate_after_commit(*keys: str) -> None:
    """Drop ``keys`` from the cache once the current transaction has committed."""
    pending: set[str] = db.session.info.setdefault("cache_invalidations", set())
    pending.update(keys)


def invalidate_now(*keys: str) -> None:
    for key in keys:
        with _cache_outage_logged("invalidate"):
            cache.set(key, TOMBSTONE, timeout=TOMBSTONE_SECONDS)


def new_generation_now(*namespaces: str) -> None:
    for namespace in namespaces:
        with _cache_outage_logged("invalidate"):
            cache.set(f"{namespace}:generation", uuid.uuid4().hex, timeout=0)


@contextmanager
def _cache_outage_logged(action: str) -> Iterator[None]:
    """A cache outage must not fail the request: reads fall through to the database."""
    try:
        yield
    except Exception:
        log.warning("cache unavailable during %s", action, exc_info=True)


@sa_event.listens_for(Session, "before_commit")
def _fence_before_commit(session: Session) -> None:
    """Tombstones before the commit too: from the commit until the invalidation after
    it, a reader in another process would otherwise find the old value still cached
    (the consumer's commits have nobody waiting for a response to close that window)."""
    if session.in_nested_transaction():
        return
    keys = set(session.info.get("cache_invalidations", ()))
    keys |= {f"{namespace}:generation" for namespace in session.info.get("cache_generations", ())}
    if keys:
        with _cache_outage_logged("invalidate"):
            cache.set_many(dict.fromkeys(keys, TOMBSTONE), timeout=TOMBSTONE_SECONDS)


@sa_event.listens_for(Session, "after_commit")
def _invalidate_committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released; readers see nothing until the real commit
    invalidate_now(*session.info.pop("cache_invalidations", ()))
    new_generation_now(*session.info.pop("cache_generations", ()))


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_invalidations(session: Session, transaction: SessionTransaction) -> None:
    """The outermost transaction ended: applied above if it committed, moot if not.

    A savepoint rolled back keeps what was asked before it: dropping one invalidation too
    many would leave stale data, while one too many only costs a cache miss.
    """
    if transaction.parent is None:
        session.info.pop("cache_invalidations", None)
        session.info.pop("cache_generations", None)
