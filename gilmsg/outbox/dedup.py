"""A recipient's durable record of what it consumed, so a restart never consumes a message twice.

:class:`Consumed` keeps the deduplication keys (the digest: msg_id and content, see
:mod:`gilmsg.core.receiving`) of the messages the application finished with, in SQLite (WAL).
The receiving side asks :meth:`Consumed.done` before handing a message over, and calls
:meth:`Consumed.record` once the application returned from it:

* ``gilmsg.tail_messages(dedup_path=...)`` records a message when the caller asks for the next
  one (the generator resumes), so "consumed" means "the loop body that got it finished";
* ``GilmsgConsumer`` with the config key ``<config_key>.gilmsg_dedup_path`` records it after
  ``consume()`` returned without raising.

The record is committed before a ``processed`` / ``rejected`` ACK is sent
(:mod:`gilmsg.core.receiving` orders it so). The one window where a crash repeats a message:
after the application finished with it and before the record's commit returned (the commit
itself: typically tens of microseconds, milliseconds at worst, see ``docs/outbox.rst``), and
only if the message then arrives again (a runner re-sends it because its ACK was lost, or it
was never acknowledged). The record is committed without fsync (``synchronous=NORMAL``): it
survives the process being killed; a machine crash (power loss) may forget the last records,
which may repeat those messages.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

from gilmsg.outbox import sqlite

SCHEMA_VERSION = 1
SCHEMA = [
    "CREATE TABLE consumed (key TEXT PRIMARY KEY, msg_id TEXT, at REAL NOT NULL) WITHOUT ROWID",
]


class Consumed:
    """The consumed-message record at ``path`` (created if missing). Thread-safe.

    Raises:
        OutboxError: the file is corrupt, read-only, unwritable or of a newer schema.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._conn = sqlite.connect(path, schema=SCHEMA, version=SCHEMA_VERSION,
                                    kind="consumed-message record", durability="normal")

    def done(self, key: str) -> bool:
        """True if the message with this deduplication key was consumed before."""
        with self._lock:
            try:
                row = self._conn.execute("SELECT 1 FROM consumed WHERE key = ?",
                                         (key,)).fetchone()
            except sqlite3.Error as exc:
                raise sqlite.wrap(self.path, exc, "consumed-message record") from None
        return row is not None

    def record(self, key: str, msg_id: Any = None) -> None:
        """Commit that the message with ``key`` was consumed (idempotent).

        Raises:
            OutboxError: the file cannot be written.
        """
        with self._lock:
            try:
                self._conn.execute("INSERT OR IGNORE INTO consumed VALUES (?, ?, ?)",
                                   (key, str(msg_id) if msg_id is not None else None,
                                    time.time()))
            except sqlite3.Error as exc:
                raise sqlite.wrap(self.path, exc, "consumed-message record") from None

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM consumed").fetchone()[0]

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._conn.close()
