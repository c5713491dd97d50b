"""The outbox file: signed messages and who still owes an ACK, in SQLite (WAL).

:class:`Store` keeps rows; every decision (due, expired, backoff, delivered) comes from
:mod:`gilmsg.outbox.policy`. All methods are thread-safe (one connection, one lock) and safe
across processes sharing the file: every change is one transaction, and a claim takes the
write lock (``BEGIN IMMEDIATE``) so two runners never lease the same message.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from gilmsg.errors import OutboxError
from gilmsg.outbox import policy, sqlite
from gilmsg.outbox.policy import Entry, Status

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


@dataclass(frozen=True)
class Stored:
    """A message as the runner needs it: its decisions' view and its exact bytes."""

    entry: Entry
    frames: list[bytes]
    digest: str


class Store:
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

    # -- reading -----------------------------------------------------------------------------

    def entries(self, status: Status | None = None,
                msg_ids: Iterable[str] | None = None) -> list[Entry]:
        """Stored messages (every status unless told), oldest first."""
        query = ("SELECT msg_id, topic, created, expires, status, attempts, next_attempt, "
                 "lease_owner, lease_until, last_error, reason, finished FROM messages")
        args: list[Any] = []
        where = []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if msg_ids is not None:
            ids = list(msg_ids)
            where.append(f"msg_id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created, msg_id"
        with self._read() as conn:
            rows = conn.execute(query, args).fetchall()
            entries = [Entry(r[0], r[1], (), r[2], r[3], Status(r[4]), {}, r[5], r[6], r[7],
                             r[8], r[9], r[10], r[11]) for r in rows]
            self._fill_recipients(conn, entries)
        return entries

    def _fill_recipients(self, conn: sqlite3.Connection, entries: list[Entry]) -> None:
        by_id = {e.msg_id: e for e in entries}
        if not by_id:
            return
        names: dict[str, list[str]] = {k: [] for k in by_id}
        for chunk in _chunks(list(by_id), 500):
            rows = conn.execute(
                f"SELECT msg_id, recipient, acked, rejected FROM recipients WHERE msg_id IN "
                f"({','.join('?' * len(chunk))}) ORDER BY msg_id, position", chunk).fetchall()
            for msg_id, who, acked, rejected in rows:
                names[msg_id].append(who)
                if acked is not None:
                    by_id[msg_id].acked[who] = acked
                if rejected is not None:
                    by_id[msg_id].rejected[who] = rejected
            for msg_id, require in conn.execute(
                    f"SELECT msg_id, require FROM messages WHERE msg_id IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall():
                by_id[msg_id].require = require
        for msg_id, entry in by_id.items():
            entry.recipients = tuple(names[msg_id])

    def get(self, msg_id: str) -> Entry | None:
        """The stored message ``msg_id``, if any."""
        found = self.entries(msg_ids=[msg_id])
        return found[0] if found else None

    def events(self, msg_id: str) -> list[tuple[float, str, str | None]]:
        """What happened to ``msg_id`` besides sends: ``(at, kind, detail)``, oldest first."""
        with self._read() as conn:
            return conn.execute("SELECT at, kind, detail FROM events WHERE msg_id = ? "
                                "ORDER BY at, rowid", (msg_id,)).fetchall()

    def stats(self, now: float) -> policy.Stats:
        """Counts, oldest pending age and per-recipient backlog (see :func:`policy.stats`)."""
        return policy.stats(self.entries(), now)

    def next_due(self) -> float | None:
        """The earliest ``next_attempt`` or lease end among pending messages (None: none)."""
        with self._read() as conn:
            row = conn.execute("SELECT min(max(next_attempt, lease_until)), min(expires) "
                               "FROM messages WHERE status = 'pending'").fetchone()
        if row[0] is None:
            return None
        return min(row[0], row[1])

    # -- runner activity (a heartbeat row in the event log) -----------------------------------

    def runner_seen(self, now: float) -> None:
        """Record that this process's runner is active at ``now`` (only the latest is kept)."""
        with self._write(light=True) as conn:
            conn.execute("DELETE FROM events WHERE kind = 'runner' AND msg_id = ''")
            conn.execute("INSERT INTO events (at, msg_id, kind, detail) VALUES (?, '', "
                         "'runner', ?)", (now, self.owner))

    def last_runner(self) -> tuple[float, str] | None:
        """``(when, owner)`` of the latest runner activity recorded, or None if never."""
        with self._read() as conn:
            row = conn.execute("SELECT at, detail FROM events WHERE kind = 'runner' AND "
                               "msg_id = '' ORDER BY at DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], row[1] or "")

    # -- the runner's side -------------------------------------------------------------------

    def claim(self, now: float, lease: float, joined: bool = False,
              limit: int = 1000) -> list[Stored]:
        """Lease to this process the pending messages due at ``now`` (at most ``limit``).

        ``joined``: a subscriber appeared; every pending message not leased elsewhere is due.
        """
        with self._write() as conn:
            rows = conn.execute(
                "SELECT msg_id, topic, created, expires, status, attempts, next_attempt, "
                "lease_owner, lease_until, digest, frame FROM messages WHERE status = 'pending' "
                "AND (next_attempt <= ? OR ?) AND expires > ? "
                "ORDER BY next_attempt, created LIMIT ?",
                (now, 1 if joined else 0, now, limit)).fetchall()
            entries = [Entry(r[0], r[1], (), r[2], r[3], Status(r[4]), {}, r[5], r[6], r[7],
                             r[8]) for r in rows]
            self._fill_recipients(conn, entries)
            claimed = []
            for entry, row in zip(entries, rows, strict=True):
                if not policy.is_due(entry, now, joined, self._alive):
                    continue
                conn.execute("UPDATE messages SET lease_owner = ?, lease_until = ? "
                             "WHERE msg_id = ?", (self.owner, now + lease, entry.msg_id))
                entry.lease_owner, entry.lease_until = self.owner, now + lease
                claimed.append(Stored(entry, [entry.topic.encode("utf-8"), bytes(row[10])],
                                      row[9]))
        return claimed

    def _alive(self, owner: str) -> bool:
        return owner == self.owner or policy.owner_alive(owner, self.host, _pid_exists)

    def delivered(self, msg_id: str, acks: Mapping[str, float]) -> Status | None:
        """Record the ACKs of a delivery that got every one of them (the fast path)."""
        return self.record_acks(msg_id, acks)

    def record_acks(self, msg_id: str, acks: Mapping[str, float],
                    rejected: Mapping[str, str] | None = None) -> Status | None:
        """Record valid ACKs (recipient -> wall time) and rejections (recipient -> reason);
        returns the message's status after.

        Only recipients the message names are recorded, each once (the first answer wins). A
        message that then owes nobody is marked delivered (``rejected`` if a recipient
        rejected it), whoever holds its lease.
        """
        with self._write(light=True) as conn:
            return self._record(conn, msg_id, acks, time.time(), rejected)

    def _record(self, conn: sqlite3.Connection, msg_id: str, acks: Mapping[str, float],
                now: float, rejected: Mapping[str, str] | None = None) -> Status | None:
        conn.executemany("UPDATE recipients SET acked = ? WHERE msg_id = ? AND recipient = ? "
                         "AND acked IS NULL AND rejected IS NULL",
                         [(at, msg_id, who) for who, at in acks.items()])
        if rejected:
            conn.executemany("UPDATE recipients SET rejected = ? WHERE msg_id = ? AND "
                             "recipient = ? AND acked IS NULL AND rejected IS NULL",
                             [(why, msg_id, who) for who, why in rejected.items()])
        changed = conn.execute(
            "UPDATE messages SET status = CASE WHEN EXISTS (SELECT 1 FROM recipients WHERE "
            "msg_id = ? AND rejected IS NOT NULL) THEN 'rejected' ELSE 'delivered' END, "
            "finished = ?, lease_owner = NULL, lease_until = 0 "
            "WHERE msg_id = ? AND status = 'pending' AND NOT EXISTS (SELECT 1 FROM recipients "
            "WHERE msg_id = ? AND acked IS NULL AND rejected IS NULL)",
            (msg_id, now, msg_id, msg_id)).rowcount
        if changed:
            row = conn.execute("SELECT status FROM messages WHERE msg_id = ?",
                               (msg_id,)).fetchone()
            reasons = conn.execute("SELECT recipient, rejected FROM recipients WHERE msg_id = ? "
                                   "AND rejected IS NOT NULL ORDER BY position",
                                   (msg_id,)).fetchall()
            conn.execute("UPDATE messages SET last_error = ? WHERE msg_id = ?",
                         ("; ".join(f"rejected by {who}: {why}" for who, why in reasons)
                          or None, msg_id))
            return Status(row[0])
        row = conn.execute("SELECT status FROM messages WHERE msg_id = ?", (msg_id,)).fetchone()
        return None if row is None else Status(row[0])

    def finish_attempt(self, msg_id: str, acks: Mapping[str, float], error: str | None,
                       now: float, rejected: Mapping[str, str] | None = None) -> Entry | None:
        """Record ``acks`` and close this process's attempt (backoff if anyone is still owed).

        An attempt whose lease another process took over meanwhile only records the ACKs.
        """
        with self._write(light=True) as conn:
            self._record(conn, msg_id, acks, now, rejected)
            found = conn.execute(
                "SELECT msg_id, topic, created, expires, status, attempts, next_attempt, "
                "lease_owner, lease_until, last_error FROM messages WHERE msg_id = ?",
                (msg_id,)).fetchone()
            if found is None:
                return None
            entry = Entry(found[0], found[1], (), found[2], found[3], Status(found[4]), {},
                          found[5], found[6], found[7], found[8], found[9])
            self._fill_recipients(conn, [entry])
            if entry.lease_owner != self.owner or entry.status is not Status.PENDING:
                return entry
            policy.after_attempt(entry, now, error)
            conn.execute("UPDATE messages SET status = ?, attempts = ?, next_attempt = ?, "
                         "lease_owner = NULL, lease_until = 0, last_error = ?, finished = ? "
                         "WHERE msg_id = ?",
                         (entry.status.value, entry.attempts, entry.next_attempt,
                          entry.last_error, entry.finished, msg_id))
            return entry

    def expire(self, now: float) -> list[Entry]:
        """Mark expired every pending message whose expiry passed; returns them."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT msg_id, topic, created, expires, status, attempts, next_attempt, "
                "lease_owner, lease_until, last_error FROM messages "
                "WHERE status = 'pending' AND expires <= ?", (now,)).fetchall()
            entries = [Entry(r[0], r[1], (), r[2], r[3], Status(r[4]), {}, r[5], r[6], r[7],
                             r[8], r[9]) for r in rows]
            entries = [e for e in entries if policy.should_expire(e, now)]
            self._fill_recipients(conn, entries)
            for entry in entries:
                entry.status, entry.finished = Status.EXPIRED, now
                detail = "still owed to " + ", ".join(entry.owed)
                conn.execute("UPDATE messages SET status = 'expired', finished = ? "
                             "WHERE msg_id = ?", (now, entry.msg_id))
                conn.execute("INSERT INTO events VALUES (?, ?, 'expired', ?)",
                             (now, entry.msg_id, detail))
        return entries

    # -- the operator's side -----------------------------------------------------------------

    def retry(self, msg_id: str | None, now: float) -> int:
        """Make ``msg_id`` (None: every pending message) due now; returns how many."""
        with self._write() as conn:
            if msg_id is None:
                ids = [r[0] for r in conn.execute(
                    "SELECT msg_id FROM messages WHERE status = 'pending'").fetchall()]
            else:
                row = conn.execute("SELECT status FROM messages WHERE msg_id = ?",
                                   (msg_id,)).fetchone()
                ids = [msg_id] if row is not None and row[0] == "pending" else []
            for one in ids:
                conn.execute("UPDATE messages SET next_attempt = 0 WHERE msg_id = ?", (one,))
                conn.execute("INSERT INTO events VALUES (?, ?, 'retry', NULL)", (now, one))
            return len(ids)

    def drop(self, msg_id: str, reason: str, now: float) -> Entry | None:
        """Give up on pending ``msg_id``: marked dropped with ``reason`` (kept, never deleted).

        Returns the entry as it was before, or None if there is no such message. A message
        that is not pending keeps its status (the returned entry says which).
        """
        with self._write() as conn:
            before = conn.execute("SELECT status FROM messages WHERE msg_id = ?",
                                  (msg_id,)).fetchone()
            if before is None:
                return None
            if before[0] == "pending":
                conn.execute("UPDATE messages SET status = 'dropped', reason = ?, finished = ?, "
                             "lease_owner = NULL, lease_until = 0 WHERE msg_id = ?",
                             (reason, now, msg_id))
                conn.execute("INSERT INTO events VALUES (?, ?, 'dropped', ?)",
                             (now, msg_id, reason))
        entry = self.get(msg_id)
        if entry is not None and before[0] != "pending":
            entry.status = Status(before[0])
        return entry


class OutboxStore(Protocol):
    """What the outbox, its runner and ``gilmsg-outbox`` need of a store (both backends).

    :class:`Store` (SQLite) and :class:`gilmsg.outbox.postgres.PgStore` implement it with the
    same promises; every decision comes from :mod:`gilmsg.outbox.policy`.
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


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def check_path(path: Any) -> str:
    """A usable path string for an outbox; raises OutboxError for an empty one."""
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise OutboxError(f"outbox path must be a file name, not {path!r}")
    return os.fspath(path)
