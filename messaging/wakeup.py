"""Wake the relay when an outbox row commits (PostgreSQL ``LISTEN``), else poll briefly.

The NOTIFY comes from a trigger on the outbox table (``models.messaging``).

NOTIFY is only a doorbell: it fires at commit, never replays, and is lost while nobody
listens, so the relay always re-reads the table after waking and on every timeout.
"""

from __future__ import annotations

import contextlib
import logging
import time

from sqlalchemy.engine import make_url

from models.messaging import OUTBOX_CHANNEL

log = logging.getLogger("carhub.relay")


class OutboxDoorbell:
    def __init__(self, database_url: str, poll_seconds: float = 0.1) -> None:
        self.url = make_url(database_url)
        self.poll_seconds = poll_seconds
        self.connection = None

    @property
    def listening(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    def _connect(self) -> None:
        import psycopg

        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.connection = psycopg.connect(dsn, autocommit=True)
        self.connection.execute(f"LISTEN {OUTBOX_CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a commit; True if one rang."""
        if not self.listening:
            time.sleep(min(timeout, self.poll_seconds))
            return False
        try:
            if self.connection is None or self.connection.closed:
                self._connect()
            rang = False
            for _ in self.connection.notifies(timeout=timeout, stop_after=1):
                rang = True
            if rang:
                # Commits that rang meanwhile are covered by the read that follows:
                # swallow their rings, or each would wake an empty read of its own.
                for _ in self.connection.notifies(timeout=0):
                    pass
            return rang
        except Exception as exc:  # noqa: BLE001 - fall back to polling until it reconnects
            log.warning("outbox LISTEN failed (%s); polling", exc)
            self.close()
            time.sleep(min(timeout, 0.5))
            return False

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None
