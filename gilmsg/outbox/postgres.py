"""The PostgreSQL backend of the outbox and of the consumed-message record (psycopg 3).

Chosen by the location: a ``postgresql://user@host:port/dbname`` URL wherever an outbox file
or a de-duplication file is accepted. The rows, the operations and the decisions are those of
the SQLite backend (:mod:`gilmsg.outbox.base`, :mod:`gilmsg.outbox.policy`); what differs:

* the tables live in the schema ``gilmsg``, versioned in ``gilmsg.meta``; a database with
  tables of its own is refused before anything is written, an older schema is refused with the
  command that migrates it (:mod:`gilmsg.outbox.pgconn`, whose names this module re-exports);
* a claim takes the due rows with ``SELECT ... FOR UPDATE SKIP LOCKED``, then leases them, in
  one transaction: runners on several hosts never lease the same message at once; recording
  answers locks the message's row, so two hosts recording ACKs for one message settle it;
* a store is one statement (and its ``NOTIFY``, which wakes the runners on commit), and may
  run in the caller's own transaction (:meth:`PgStore.put_in`, the transactional outbox);
* a server that is unreachable, refuses the credentials, is a read-only replica, or restarts
  mid-write gives one :class:`~gilmsg.errors.OutboxError` (exit 6 in the commands) and the
  transaction it interrupted is not reported as stored. The next call reconnects.

Passwords in URLs are never printed: :attr:`PgStore.path` is the URL without it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from gilmsg.errors import InvalidInput, OutboxError
from gilmsg.outbox import dedup, policy
from gilmsg.outbox.base import SqlStore
from gilmsg.outbox.pgconn import (
    CHANNEL,
    CONNECT_TIMEOUT,
    MIGRATIONS,
    NAMESPACE,
    SCHEMAS,
    VERSIONS,
    _psycopg,
    conn_url,
    connect,
    connect_raw,
    describe,
    found_version,
    migrate,
    redact,
    wrap,
)
from gilmsg.outbox.store import PG_SCHEMES, is_url

__all__ = ["CHANNEL", "CONNECT_TIMEOUT", "MIGRATIONS", "NAMESPACE", "PG_SCHEMES", "SCHEMAS",
           "VERSIONS", "PgConsumed", "PgStore", "conn_url", "connect", "connect_raw", "describe",
           "found_version", "insert", "is_url", "migrate", "redact", "wrap"]

_M = f"{NAMESPACE}.messages"
_R = f"{NAMESPACE}.recipients"


def insert(cur: Any, items: Sequence[tuple[str, str, Sequence[bytes], Sequence[str]]],
           now: float, expiry: float, owner: str | None, lease: float,
           require: str = "received") -> None:
    """Insert the ``(msg_id, digest, frames, recipients)`` items with cursor ``cur``, each
    requiring ``require`` of its recipients.

    One statement (one round trip to the server), so in autocommit mode it is also one
    transaction: the messages, their recipients and the ``NOTIFY`` (which PostgreSQL delivers
    when, and only if, the transaction commits) all or nothing.
    """
    cur.execute(_INSERT, (
        now, now + expiry, owner, now + lease if lease > 0 else 0.0, require,
        [i[0] for i in items], [i[2][0].decode("utf-8") for i in items], [i[1] for i in items],
        [bytes(i[2][1]) for i in items],
        [msg_id for msg_id, _d, _f, names in items for _ in names],
        [n for _m, _d, _f, names in items for n in range(len(names))],
        [who for _m, _d, _f, names in items for who in names]))


_INSERT = (
    f"WITH m AS (INSERT INTO {_M} (msg_id, topic, digest, frame, created, expires, lease_owner, "
    "lease_until, require) SELECT u.msg_id, u.topic, u.digest, u.frame, %s::float8, "
    "%s::float8, %s::text, %s::float8, %s::text FROM "
    "unnest(%s::text[], %s::text[], %s::text[], %s::bytea[]) AS u(msg_id, topic, digest, frame)"
    f"), r AS (INSERT INTO {_R} (msg_id, position, recipient) SELECT * FROM "
    f"unnest(%s::text[], %s::int[], %s::text[])) SELECT pg_notify('{CHANNEL}', '')")


class PgStore(SqlStore):
    """One outbox in a PostgreSQL database; the same methods and promises as ``Store``.

    Thread-safe (one connection, one lock) and safe across processes and hosts sharing the
    database: every change is one transaction; a claim locks the rows it leases.

    Args:
        url: ``postgresql://user[:password]@host:port/dbname`` (libpq's rules: PGPASSWORD,
            ``~/.pgpass`` and the other ``PG*`` variables apply).
        create, readonly: as for ``Store``.
        durability: ``"full"``: a commit returns once the server has flushed it
            (``synchronous_commit=on``); ``"normal"``: once the server has it
            (``synchronous_commit=off``; a server crash may lose the last ~0.6 s).
        adopt: create the tables in a database with tables of its own (``init``).

    Raises:
        OutboxError: see :func:`connect`.
    """

    MESSAGES, RECIPIENTS, EVENTS = _M, _R, f"{NAMESPACE}.events"
    PARAM = "%s"
    LOCK_ROWS = " FOR UPDATE"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    GREATEST = "greatest"
    EVENT_ORDER = "id"
    BATCH = 10_000

    def __init__(self, url: str, *, create: bool = True, readonly: bool = False,
                 durability: str = "full", adopt: bool = False) -> None:
        if durability not in ("full", "normal"):
            raise OutboxError(f"outbox {redact(url)}: durability must be one of full, normal, "
                              f"not {durability!r}")
        self._url = url
        self.path = redact(url)
        self.durability = durability
        self.readonly = readonly
        self.host = socket.gethostname()
        self.owner = policy.lease_owner(self.host, os.getpid(), uuid.uuid4().hex[:8])
        self._lock = threading.Lock()
        self._psycopg = _psycopg()
        self._conn = connect(url, "outbox", create=create, readonly=readonly, adopt=adopt)
        self._configure(self._conn)
        self.dbname = self._conn.info.dbname

    def _configure(self, conn: Any) -> None:
        sync = "on" if self.durability == "full" else "off"
        conn.execute(f"SET synchronous_commit = {sync}")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def _connection(self) -> Any:
        if self._conn.closed or self._conn.broken:
            self._conn.close()
            self._conn = connect(self._url, "outbox", create=False, readonly=self.readonly)
            self._configure(self._conn)
        return self._conn

    @contextmanager
    def _write(self, light: bool = False) -> Iterator[Any]:
        """One transaction; any failure rolls it back and becomes an OutboxError.

        ``light``: commit without waiting for the server's flush (recorded ACKs).
        """
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    if light and self.durability == "full":
                        conn.execute("SET LOCAL synchronous_commit = off")
                    with conn.cursor() as cur:
                        yield cur
            except self._psycopg.Error as exc:
                raise wrap(self._url, exc, "outbox") from None

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """A cursor in autocommit mode: each statement is its own transaction."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.cursor() as cur:
                    yield cur
            except self._psycopg.Error as exc:
                raise wrap(self._url, exc, "outbox") from None

    def _any(self, column: str, ids: list[str]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(ids)]

    # -- storing -----------------------------------------------------------------------------

    def put(self, items: Sequence[tuple[str, str, Sequence[bytes], Sequence[str]]], now: float,
            expiry: float, lease: float = 0.0, require: str = "received") -> None:
        """Store the items in one commit (see ``Store.put``); on OutboxError none is stored."""
        with self._read() as cur:  # one statement: its own transaction
            insert(cur, items, now, expiry, self.owner if lease > 0 else None, lease, require)

    def put_in(self, conn: Any,
               items: Sequence[tuple[str, str, Sequence[bytes], Sequence[str]]],
               now: float, expiry: float, require: str = "received") -> None:
        """Insert the items, requiring ``require``, in the caller's open transaction on
        ``conn`` (not committed here).

        They are stored when the caller commits and vanish if it rolls back; no lease is
        taken, so a runner sends them once (and only once) they are committed. The inserts run
        in a savepoint: if they fail, the caller's transaction is left as it was.

        Raises:
            InvalidInput: ``conn`` is not a psycopg connection, is in autocommit mode outside a
                transaction, its transaction failed, or it is connected to another database.
            OutboxError: the inserts failed (no gilmsg outbox in that database ...).
        """
        psycopg = self._psycopg
        if not isinstance(conn, psycopg.Connection):
            raise InvalidInput("connection= must be a psycopg 3 Connection (with SQLAlchemy: "
                               "session.connection().connection.driver_connection), not "
                               f"{type(conn).__name__}")
        status = conn.info.transaction_status
        idle = status == psycopg.pq.TransactionStatus.IDLE
        if status == psycopg.pq.TransactionStatus.INERROR:
            raise InvalidInput("connection=: its transaction has failed; roll it back first")
        if status not in (psycopg.pq.TransactionStatus.IDLE,
                          psycopg.pq.TransactionStatus.INTRANS):
            raise InvalidInput(f"connection=: not usable ({status.name})")
        if idle and conn.autocommit:
            raise InvalidInput("connection= is in autocommit mode outside a transaction: the "
                               "message would commit on its own; open conn.transaction() first")
        if conn.info.dbname != self.dbname:
            raise InvalidInput(f"connection= is connected to database {conn.info.dbname!r}, "
                               f"the outbox is in {self.dbname!r}")
        try:
            if idle:  # opens the caller's (implicit) transaction; the savepoint goes inside it
                conn.execute("SELECT 1")
            with conn.transaction(), conn.cursor() as cur:
                insert(cur, items, now, expiry, None, 0.0, require)
        except psycopg.Error as exc:
            raise wrap(self._url, exc, "outbox") from None

    # -- waking runners ----------------------------------------------------------------------

    def waiter(self) -> Callable[[float], bool]:
        """A function ``wait(timeout)`` that returns True as soon as a store is committed.

        It uses its own connection (``LISTEN gilmsg_outbox``); a notification is sent by every
        commit that stored messages, including the callers' own transactions
        (:meth:`put_in`), and never by a rolled-back one. Returns False on timeout.
        """
        conn = connect_raw(self._url, "outbox")
        conn.execute(f"LISTEN {CHANNEL}")
        psycopg = self._psycopg

        def wait(timeout: float) -> bool:
            try:
                got = False
                for _note in conn.notifies(timeout=timeout, stop_after=1):
                    got = True
                if got:  # drain the others already here
                    for _note in conn.notifies(timeout=0):
                        pass
                return got
            except psycopg.Error:
                time.sleep(min(timeout, 1.0))  # the connection is gone: fall back to polling
                return False

        wait.close = conn.close  # type: ignore[attr-defined]
        return wait


class PgConsumed:
    """A consumed-message record in a PostgreSQL database (see ``gilmsg.outbox.dedup``).

    Shared by every host of a recipient service: a message consumed on one is ``done`` on all,
    and its settlement (``processed``, or ``rejected`` with its reason) is kept as in the SQLite
    record (:class:`gilmsg.outbox.dedup.Consumed`). A record commits with
    ``synchronous_commit=on``: once :meth:`record` returns, it survives the recipient's host
    and the server crashing. Thread-safe.

    Raises:
        OutboxError: unreachable, not gilmsg's, read-only, older or newer schema (see
            :func:`connect`).
    """

    KIND = dedup.KIND

    def __init__(self, url: str) -> None:
        self._url = url
        self.path = redact(url)
        self._lock = threading.Lock()
        self._psycopg = _psycopg()
        self._conn = connect(url, self.KIND)

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self._lock:
            try:
                if self._conn.closed or self._conn.broken:
                    self._conn.close()
                    self._conn = connect(self._url, self.KIND, create=False)
                with self._conn.cursor() as cur:
                    yield cur
            except self._psycopg.Error as exc:
                raise wrap(self._url, exc, self.KIND) from None

    def done(self, key: str) -> bool:
        """True if the message with this deduplication key was consumed before (any host)."""
        with self._cursor() as cur:
            return cur.execute(f"SELECT 1 FROM {NAMESPACE}.consumed WHERE key = %s",
                               (key,)).fetchone() is not None

    def settlement(self, key: str) -> tuple[str, str | None] | None:
        """How the message with this key was settled, as recorded (on any host): see
        :meth:`gilmsg.outbox.dedup.Consumed.settlement`."""
        with self._cursor() as cur:
            row = cur.execute(f"SELECT status, reason FROM {NAMESPACE}.consumed WHERE key = %s",
                              (key,)).fetchone()
        return None if row is None else dedup.settlement_of(row[0], row[1])

    def record(self, key: str, msg_id: Any = None, status: str | None = None,
               reason: str | None = None) -> None:
        """Commit that the message with ``key`` was consumed, settled ``status`` (idempotent:
        the first record stands; see :meth:`gilmsg.outbox.dedup.Consumed.record`).

        Raises:
            InvalidInput: ``status`` is neither None nor a settlement.
            OutboxError: the record cannot be written.
        """
        dedup.check_settlement(status)
        with self._cursor() as cur:
            cur.execute(f"INSERT INTO {NAMESPACE}.consumed (key, msg_id, at, status, reason) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                        (key, str(msg_id) if msg_id is not None else None, time.time(), status,
                         reason if status == "rejected" else None))

    def __len__(self) -> int:
        with self._cursor() as cur:
            return int(cur.execute(f"SELECT count(*) FROM {NAMESPACE}.consumed").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()
