"""The outbox file: signed messages and who still owes an ACK, in SQLite (WAL).

:class:`Store` keeps rows; its reads and writes are :class:`gilmsg.outbox.base.SqlStore`'s
(shared with the PostgreSQL store), every decision (due, expired, backoff, delivered) comes
from :mod:`gilmsg.outbox.policy`. What is SQLite's is here: the schema, the connection, the
transactions and ``put``. All methods are thread-safe (one connection, one lock) and safe
across processes sharing the file: every change is one transaction, and a claim takes the
write lock (``BEGIN IMMEDIATE``) so two runners never lease the same message.

This module also holds what both backends answer to: :class:`OutboxStore` and
:func:`open_store`, which picks a backend by location.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from gilmsg.errors import OutboxError
from gilmsg.outbox import policy, sqlite
from gilmsg.outbox.base import SqlStore, Stored
from gilmsg.outbox.policy import Entry, Status

__all__ = ["PG_SCHEMES", "SCHEMA", "SCHEMA_VERSION", "OutboxStore", "Store", "Stored",
           "check_path", "is_url", "open_store"]

#: The schema this gilmsg writes (``PRAGMA user_version``); newer files are refused.
SCHEMA_VERSION = 2
#: Version 2 (issue 19): what each message requires, and each recipient's rejection reason.
_V2 = [
    "ALTER TABLE messages ADD COLUMN require TEXT NOT NULL DEFAULT 'received'",
    "ALTER TABLE recipients ADD COLUMN rejected TEXT",
]

SCHEMA = [
    """CREATE TABLE messages (
        msg_id TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        digest TEXT NOT NULL,
        frame BLOB NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        reason TEXT,
        finished REAL
    )""",
    "CREATE INDEX messages_by_status ON messages (status, next_attempt)",
    """CREATE TABLE recipients (
        msg_id TEXT NOT NULL REFERENCES messages (msg_id),
        position INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        acked REAL,
        PRIMARY KEY (msg_id, recipient)
    ) WITHOUT ROWID""",
    """CREATE TABLE events (
        at REAL NOT NULL,
        msg_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT
    )""",
    *_V2,
]


def _migrate(conn: sqlite3.Connection, found: int) -> None:
    """Bring a file of schema ``found`` to :data:`SCHEMA_VERSION` (inside its transaction)."""
    if found < 2:
        for statement in _V2:
            conn.execute(statement)


class Store(SqlStore):
    """One outbox file.

    Args:
        path: the SQLite file; created (with its schema) unless ``create`` is false.
        readonly: open for reading only (``list``, ``show``, ``stats`` on a read-only file).
        durability: ``"full"`` (default): a stored message survives power loss (fsync per
            commit); ``"normal"``: it survives a crash of the process, not of the machine.

    Raises:
        OutboxError: see :func:`gilmsg.outbox.sqlite.connect`.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, readonly: bool = False,
                 durability: str = "full") -> None:
        self.path = os.fspath(path)
        self.host = socket.gethostname()
        self.owner = policy.lease_owner(self.host, os.getpid(), uuid.uuid4().hex[:8])
        self._lock = threading.Lock()
        self.durability = durability
        self._conn = sqlite.connect(path, schema=SCHEMA, version=SCHEMA_VERSION, kind="outbox",
                                    create=create, readonly=readonly, durability=durability,
                                    migrate=_migrate)
        self._light: sqlite3.Connection | None = None  # commits without fsync (recorded ACKs)

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._conn.close()
            if self._light is not None:
                self._light.close()

    @contextmanager
    def _write(self, light: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; any SQLite failure rolls back and becomes an OutboxError.

        ``light``: commit without fsync (recorded ACKs: losing one only costs a re-send).
        """
        with self._lock:
            conn = self._conn
            try:
                if light and self.durability != "normal":
                    if self._light is None:
                        self._light = sqlite.connect(
                            self.path, schema=SCHEMA, version=SCHEMA_VERSION, kind="outbox",
                            create=False, durability="normal", migrate=_migrate)
                    conn = self._light
                with self._transaction(conn):
                    yield conn
            except sqlite3.Error as exc:
                raise sqlite.wrap(self.path, exc, "outbox") from None

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise sqlite.wrap(self.path, exc, "outbox") from None

    # -- storing -----------------------------------------------------------------------------

    def put(self, items: Sequence[tuple[str, str, Sequence[bytes], Sequence[str]]], now: float,
            expiry: float, lease: float = 0.0, require: str = "received") -> None:
        """Store ``(msg_id, digest, frames, recipients)`` items in one commit (a group commit).

        With ``lease`` > 0 this process holds them for that many seconds (its own first
        attempt). When this returns, the rows are committed with the store's durability; when
        it raises, none of them is.

        Raises:
            OutboxError: the file cannot be written (full, read-only ...); nothing stored.
        """
        owner = self.owner if lease > 0 else None
        with self._write() as conn:
            for msg_id, digest, frames, recipients in items:
                conn.execute(
                    "INSERT INTO messages (msg_id, topic, digest, frame, created, expires, "
                    "lease_owner, lease_until, require) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (msg_id, frames[0].decode("utf-8"), digest, frames[1], now, now + expiry,
                     owner, now + lease if lease > 0 else 0.0, require))
                conn.executemany(
                    "INSERT INTO recipients (msg_id, position, recipient) VALUES (?, ?, ?)",
                    [(msg_id, i, who) for i, who in enumerate(recipients)])


class OutboxStore(Protocol):
    """What the outbox, its runner and ``gilmsg-outbox`` need of a store (both backends).

    :class:`Store` (SQLite) and :class:`gilmsg.outbox.postgres.PgStore` implement it with the
    same code (:class:`gilmsg.outbox.base.SqlStore`) and promises; every decision comes from
    :mod:`gilmsg.outbox.policy`.
    """

    path: str
    owner: str

    def close(self) -> None: ...
    def put(self, items: Sequence[tuple[str, str, Sequence[bytes], Sequence[str]]],
            now: float, expiry: float, lease: float = 0.0,
            require: str = "received") -> None: ...
    def entries(self, status: Status | None = None,
                msg_ids: Iterable[str] | None = None) -> list[Entry]: ...
    def get(self, msg_id: str) -> Entry | None: ...
    def events(self, msg_id: str) -> list[tuple[float, str, str | None]]: ...
    def stats(self, now: float) -> policy.Stats: ...
    def next_due(self) -> float | None: ...
    def claim(self, now: float, lease: float, joined: bool = False,
              limit: int = 1000) -> list[Stored]: ...
    def delivered(self, msg_id: str, acks: Mapping[str, float]) -> Status | None: ...
    def record_acks(self, msg_id: str, acks: Mapping[str, float],
                    rejected: Mapping[str, str] | None = None) -> Status | None: ...
    def finish_attempt(self, msg_id: str, acks: Mapping[str, float], error: str | None,
                       now: float, rejected: Mapping[str, str] | None = None
                       ) -> Entry | None: ...
    def runner_seen(self, now: float) -> None: ...
    def last_runner(self) -> tuple[float, str] | None: ...
    def expire(self, now: float) -> list[Entry]: ...
    def retry(self, msg_id: str | None, now: float) -> int: ...
    def drop(self, msg_id: str, reason: str, now: float) -> Entry | None: ...


#: URL schemes of an outbox location that select the PostgreSQL backend.
PG_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: Any) -> bool:
    """True if ``location`` is a ``postgresql://`` URL (the PostgreSQL backend)."""
    return isinstance(location, str) and location.startswith(PG_SCHEMES)


def open_store(location: str | os.PathLike, *, create: bool = True, readonly: bool = False,
               durability: str = "full", adopt: bool = False) -> OutboxStore:
    """The outbox at ``location``: a ``postgresql://`` URL (PostgreSQL), else an SQLite file.

    ``adopt`` (PostgreSQL only): put gilmsg's tables into a database with tables of its own.

    Raises:
        OutboxError: the outbox cannot be used (see each backend).
    """
    if is_url(location):
        from gilmsg.outbox.postgres import PgStore

        return PgStore(str(location), create=create, readonly=readonly, durability=durability,
                       adopt=adopt)
    return Store(location, create=create, readonly=readonly, durability=durability)


def check_path(path: Any) -> str:
    """A usable path string for an outbox; raises OutboxError for an empty one."""
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise OutboxError(f"outbox path must be a file name, not {path!r}")
    return os.fspath(path)
