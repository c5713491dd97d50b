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
(:mod:`gilmsg.core.receiving` orders it so), and keeps that settlement (the status, and a
rejection's reason): a recipient in ``processed`` mode that restarts answers a re-sent copy of a
message it consumed with the settlement it recorded (:meth:`Consumed.settlement`), after the
``received`` ACK, as before the restart. A message recorded without a settlement (``received``
mode, a message naming others, one ended without a verdict, or a file written by gilmsg before
schema version 2) is answered ``received`` only. The one window where a crash repeats a message:
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
from typing import Any, Protocol

from gilmsg.outbox import sqlite

#: 1: key, msg_id, at. 2: status and reason (the settlement), NULL in rows of version 1.
SCHEMA_VERSION = 2
SCHEMA = [
    "CREATE TABLE consumed (key TEXT PRIMARY KEY, msg_id TEXT, at REAL NOT NULL, "
    "status TEXT, reason TEXT) WITHOUT ROWID",
]

#: The statuses a settlement is recorded with.
SETTLEMENTS = ("processed", "rejected")
#: What the files and tables of a consumed-message record are called (in errors, in
#: ``gilmsg.meta``).
KIND = "consumed-message record"


def check_settlement(status: str | None) -> None:
    """Refuse a ``status`` to record that is neither None nor one of :data:`SETTLEMENTS`.

    Raises:
        InvalidInput: it is neither.
    """
    if status is not None and status not in SETTLEMENTS:
        from gilmsg.errors import InvalidInput

        raise InvalidInput(f"a recorded settlement is one of {', '.join(SETTLEMENTS)}, "
                           f"got {status!r}")


def settlement_of(status: Any, reason: Any) -> tuple[str, str | None] | None:
    """The settlement a record's ``status`` and ``reason`` columns say: ``("processed",
    None)``, ``("rejected", reason)``, or None (recorded without one)."""
    if status not in SETTLEMENTS:
        return None
    return str(status), (str(reason) if status == "rejected" and reason is not None else None)


def _migrate(conn: sqlite3.Connection, found: int) -> None:
    """Bring a file of schema version ``found`` to :data:`SCHEMA_VERSION` (in the caller's
    transaction): its rows are kept, without a settlement."""
    if found < 2:
        conn.execute("ALTER TABLE consumed ADD COLUMN status TEXT")
        conn.execute("ALTER TABLE consumed ADD COLUMN reason TEXT")


class ConsumedRecord(Protocol):
    """What the receiving side needs of a consumed-message record (either backend)."""

    path: str

    def done(self, key: str) -> bool: ...
    def settlement(self, key: str) -> tuple[str, str | None] | None: ...
    def record(self, key: str, msg_id: Any = None, status: str | None = None,
               reason: str | None = None) -> None: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


def open_consumed(location: str | os.PathLike) -> ConsumedRecord:
    """The consumed-message record at ``location``: a ``postgresql://`` URL (shared by every
    host of a recipient service, see :class:`gilmsg.outbox.postgres.PgConsumed`), else an
    SQLite file (:class:`Consumed`). Both have ``done``, ``settlement``, ``record``, ``len`` and
    ``close``, with the same promises.

    Raises:
        OutboxError: the record cannot be used.
    """
    from gilmsg.outbox.store import is_url

    if is_url(location):
        from gilmsg.outbox.postgres import PgConsumed

        return PgConsumed(str(location))
    return Consumed(location)


class Consumed:
    """The consumed-message record at ``path`` (created if missing). Thread-safe.

    Raises:
        OutboxError: the file is corrupt, read-only, unwritable or of a newer schema.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._conn = sqlite.connect(path, schema=SCHEMA, version=SCHEMA_VERSION, kind=KIND,
                                    durability="normal", migrate=_migrate)

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        """The first row of ``sql`` (None: none); a failure becomes an OutboxError."""
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchone()
            except sqlite3.Error as exc:
                raise sqlite.wrap(self.path, exc, KIND) from None

    def done(self, key: str) -> bool:
        """True if the message with this deduplication key was consumed before."""
        return self._one("SELECT 1 FROM consumed WHERE key = ?", (key,)) is not None

    def settlement(self, key: str) -> tuple[str, str | None] | None:
        """How the message with this key was settled, as recorded: ``("processed", None)`` or
        ``("rejected", reason)``; None if it was not consumed, or recorded without a
        settlement."""
        row = self._one("SELECT status, reason FROM consumed WHERE key = ?", (key,))
        return None if row is None else settlement_of(row[0], row[1])

    def record(self, key: str, msg_id: Any = None, status: str | None = None,
               reason: str | None = None) -> None:
        """Commit that the message with ``key`` was consumed (idempotent: the first record
        stands), settled ``status`` (``processed``, or ``rejected`` for ``reason``; None: not
        settled here).

        Raises:
            InvalidInput: ``status`` is neither None nor a settlement.
            OutboxError: the file cannot be written.
        """
        check_settlement(status)
        self._one("INSERT OR IGNORE INTO consumed (key, msg_id, at, status, reason) "
                  "VALUES (?, ?, ?, ?, ?)",
                  (key, str(msg_id) if msg_id is not None else None, time.time(), status,
                   reason if status == "rejected" else None))

    def __len__(self) -> int:
        return int(self._one("SELECT count(*) FROM consumed", ())[0])

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._conn.close()
