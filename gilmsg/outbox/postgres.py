"""The PostgreSQL backend of the outbox and of the consumed-message record (psycopg 3).

Chosen by the location: a ``postgresql://user@host:port/dbname`` URL wherever an outbox file
or a de-duplication file is accepted. The rows and the decisions are those of the SQLite
backend (:mod:`gilmsg.outbox.store`, :mod:`gilmsg.outbox.policy`); what differs:

* the tables live in the schema ``gilmsg`` of the database, next to a ``gilmsg.meta`` table
  that names what they are (``outbox``, ``consumed-message record``) and their schema version;
* a database is **gilmsg's** when it has that meta table. An empty database is made gilmsg's
  on first use; a database with tables of its own is refused before anything is written to it
  (``gilmsg-outbox --outbox URL init`` adopts it, for the transactional outbox);
* a newer schema is refused; an older one is refused with the command that migrates it
  (``gilmsg-outbox --outbox URL migrate``): runners on several hosts share the database, and
  one upgraded host must not change the tables under the others without an operator saying so;
* a claim takes the due rows with ``SELECT ... FOR UPDATE SKIP LOCKED``, then leases them, in
  one transaction: runners on several hosts never lease the same message at once;
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
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gilmsg.errors import InvalidInput, OutboxError
from gilmsg.outbox import policy
from gilmsg.outbox.policy import Entry, Status
from gilmsg.outbox.store import PG_SCHEMES, Stored, _pid_exists, is_url

#: The PostgreSQL schema (namespace) gilmsg's tables live in.
NAMESPACE = "gilmsg"
#: Seconds a connection attempt may take before the server counts as unreachable.
CONNECT_TIMEOUT = 10
#: Channel notified (on commit only) when messages are stored; runners LISTEN to it.
CHANNEL = "gilmsg_outbox"
#: Schema version of each kind this gilmsg writes.
VERSIONS = {"outbox": 1, "consumed-message record": 1}

OUTBOX_SCHEMA = [
    f"""CREATE TABLE {NAMESPACE}.messages (
        msg_id TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        digest TEXT NOT NULL,
        frame BYTEA NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt DOUBLE PRECISION NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_error TEXT,
        reason TEXT,
        finished DOUBLE PRECISION
    )""",
    f"CREATE INDEX messages_by_status ON {NAMESPACE}.messages (status, next_attempt)",
    f"""CREATE TABLE {NAMESPACE}.recipients (
        msg_id TEXT NOT NULL REFERENCES {NAMESPACE}.messages (msg_id),
        position INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        acked DOUBLE PRECISION,
        PRIMARY KEY (msg_id, recipient)
    )""",
    f"""CREATE TABLE {NAMESPACE}.events (
        id BIGSERIAL PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        msg_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT
    )""",
    f"CREATE INDEX events_by_msg ON {NAMESPACE}.events (msg_id)",
]

CONSUMED_SCHEMA = [
    f"""CREATE TABLE {NAMESPACE}.consumed (
        key TEXT PRIMARY KEY, msg_id TEXT, at DOUBLE PRECISION NOT NULL)""",
]

SCHEMAS = {"outbox": OUTBOX_SCHEMA, "consumed-message record": CONSUMED_SCHEMA}

#: ``{kind: {from_version: [statements to reach from_version + 1]}}`` (none yet: version 1).
MIGRATIONS: dict[str, dict[int, list[str]]] = {"outbox": {}, "consumed-message record": {}}

_M = f"{NAMESPACE}.messages"
_R = f"{NAMESPACE}.recipients"
_E = f"{NAMESPACE}.events"
_COLUMNS = ("msg_id, topic, created, expires, status, attempts, next_attempt, lease_owner, "
            "lease_until, last_error, reason, finished")


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable URL)"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise OutboxError("a postgresql:// outbox needs psycopg 3: pip install "
                          "'gilmsg[postgresql]'") from None
    return psycopg


def describe(exc: BaseException) -> str:
    """What a psycopg error means for the store, in one line an operator can act on."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    low = text.lower()
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate == "25006" or "read-only transaction" in low:
        return f"read-only (a replica, or default_transaction_read_only is on): {text}"
    if sqlstate == "28P01" or "password authentication failed" in low or sqlstate == "28000":
        return f"the server refused the credentials: {text}"
    if sqlstate == "3D000":
        return f"no such database: {text}"
    if "connection refused" in low or "could not connect" in low or "timeout" in low \
            or "connection failed" in low:
        return f"cannot reach the server: {text}"
    if sqlstate.startswith("57P") or "terminat" in low or "server closed" in low \
            or "connection" in low and "lost" in low or "consuming input failed" in low:
        return (f"the connection to the server was lost (restarted?); the write under way is "
                f"not known to be committed: {text}")
    if sqlstate == "53100" or "no space" in low:
        return f"cannot write: the server's disk is full: {text}"
    if sqlstate == "42501":
        return f"permission denied: {text}"
    return text


def wrap(url: str, exc: BaseException, kind: str) -> OutboxError:
    """The :class:`OutboxError` for ``exc`` raised while using the database at ``url``.

    The URL's password never appears in it, even where the driver's message quotes the URL.
    """
    text = describe(exc).replace(url, redact(url))
    try:
        secret = urlsplit(url).password
    except ValueError:
        secret = _loose_password(url)
    if secret:
        text = text.replace(secret, "***")
    return OutboxError(f"{kind} {redact(url)}: {text}")


def _loose_password(url: str) -> str | None:
    """The password of a URL too broken for urlsplit (``user:password@`` after the scheme)."""
    rest = url.split("://", 1)[-1]
    if "@" not in rest:
        return None
    userinfo = rest.rsplit("@", 1)[0]
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


def connect_raw(url: str, kind: str) -> Any:
    """An autocommit psycopg connection to ``url`` (no schema check). Raises OutboxError."""
    psycopg = _psycopg()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except (psycopg.Error, ValueError) as exc:
        raise wrap(url, exc, kind) from None


def _foreign_tables(conn: Any) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN "
        "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%' "
        "AND n.nspname <> %s", (NAMESPACE,)).fetchone()[0]


def found_version(conn: Any, kind: str) -> int | None:
    """The schema version of ``kind`` in the database; None if it has none.

    Raises:
        OutboxError: there is a ``gilmsg`` schema but it is not gilmsg's (no meta table).
    """
    has_ns = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                          (NAMESPACE,)).fetchone()
    if not has_ns:
        return None
    has_meta = conn.execute("SELECT to_regclass(%s)", (f"{NAMESPACE}.meta",)).fetchone()[0]
    if has_meta is None:
        raise OutboxError(f"{kind} {redact(conn_url(conn))}: a schema {NAMESPACE!r} exists but "
                          f"is not gilmsg's (no {NAMESPACE}.meta table): nothing written")
    row = conn.execute(f"SELECT version FROM {NAMESPACE}.meta WHERE kind = %s",
                       (kind,)).fetchone()
    return None if row is None else int(row[0])


def conn_url(conn: Any) -> str:
    """A password-free description of where ``conn`` is connected."""
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


def connect(url: str, kind: str, *, create: bool = True, readonly: bool = False,
            adopt: bool = False) -> Any:
    """Connect to the gilmsg ``kind`` at ``url``, creating its tables if allowed.

    ``create``: make the tables if the database has none of this kind (an empty database, or
    one that is already gilmsg's; with ``adopt`` also one with tables of its own).

    Raises:
        OutboxError: unreachable, credentials refused, not gilmsg's (nothing written), a newer
            schema, an older one (with the command to migrate), read-only unless ``readonly``.
    """
    psycopg = _psycopg()
    conn = connect_raw(url, kind)
    where = redact(url)
    try:
        version = VERSIONS[kind]
        found = found_version(conn, kind)
        if found is not None and found > version:
            raise OutboxError(f"{kind} {where}: written by a newer gilmsg (schema version "
                              f"{found}, this gilmsg reads up to {version}); upgrade gilmsg "
                              "to use it")
        if found is not None and found < version:
            raise OutboxError(f"{kind} {where}: schema version {found} is older than this "
                              f"gilmsg's {version}; migrate it (every host's gilmsg must be "
                              f"upgraded first): gilmsg-outbox --outbox '{where}' migrate")
        if not readonly:
            recovery, ro = conn.execute(
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"
            ).fetchone()
            if recovery or ro == "on":
                raise OutboxError(f"{kind} {where}: read-only ("
                                  + ("a replica in recovery" if recovery else
                                     "default_transaction_read_only is on")
                                  + "): cannot store")
        if found is None:
            if readonly or not create:
                raise OutboxError(f"{kind} {where}: not a gilmsg {kind} (no "
                                  f"{NAMESPACE}.meta entry for it)")
            _create(conn, kind, where, adopt)
    except OutboxError:
        conn.close()
        raise
    except psycopg.Error as exc:
        conn.close()
        raise wrap(url, exc, kind) from None
    return conn


def _create(conn: Any, kind: str, where: str, adopt: bool) -> None:
    with conn.transaction():
        # Two first openers at once: one creates, the other finds it made.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(b"gilmsg-schema"),))
        if found_version(conn, kind) is not None:
            return
        has_meta = conn.execute("SELECT to_regclass(%s)", (f"{NAMESPACE}.meta",)).fetchone()[0]
        if has_meta is None:
            foreign = _foreign_tables(conn)
            if foreign and not adopt:
                raise OutboxError(
                    f"{kind} {where}: a database that is not gilmsg's ({foreign} tables of its "
                    f"own): nothing written. To keep gilmsg's tables in it (schema "
                    f"{NAMESPACE!r}, e.g. for publish(connection=...)), run: gilmsg-outbox "
                    f"--outbox '{where}' init")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {NAMESPACE}")
            conn.execute(f"CREATE TABLE {NAMESPACE}.meta (kind TEXT PRIMARY KEY, "
                         "version INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL)")
        for statement in SCHEMAS[kind]:
            conn.execute(statement)
        conn.execute(f"INSERT INTO {NAMESPACE}.meta VALUES (%s, %s, %s)",
                     (kind, VERSIONS[kind], time.time()))


def migrate(url: str, kind: str) -> tuple[int | None, int]:
    """Bring ``kind`` at ``url`` to this gilmsg's schema version; ``(before, after)``.

    Raises:
        OutboxError: not gilmsg's, newer, unreachable, or no known path from its version.
    """
    psycopg = _psycopg()
    conn = connect_raw(url, kind)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(b"gilmsg-schema"),))
            found = found_version(conn, kind)
            target = VERSIONS[kind]
            if found is None:
                raise OutboxError(f"{kind} {redact(url)}: not a gilmsg {kind}: nothing to "
                                  "migrate")
            if found > target:
                raise OutboxError(f"{kind} {redact(url)}: schema version {found} is newer "
                                  f"than this gilmsg's {target}; upgrade gilmsg")
            at = found
            while at < target:
                steps = MIGRATIONS[kind].get(at)
                if steps is None:
                    raise OutboxError(f"{kind} {redact(url)}: no migration from schema "
                                      f"version {at}")
                for statement in steps:
                    conn.execute(statement)
                at += 1
            conn.execute(f"UPDATE {NAMESPACE}.meta SET version = %s WHERE kind = %s",
                         (target, kind))
        return found, target
    except psycopg.Error as exc:
        raise wrap(url, exc, kind) from None
    finally:
        conn.close()


def _entry(r: Sequence[Any]) -> Entry:
    return Entry(r[0], r[1], (), r[2], r[3], Status(r[4]), {}, r[5], r[6], r[7], r[8],
                 *r[9:12])


def insert(cur: Any, items: Sequence[tuple[str, str, Sequence[bytes], Sequence[str]]],
           now: float, expiry: float, owner: str | None, lease: float) -> None:
    """Insert the ``(msg_id, digest, frames, recipients)`` items with cursor ``cur``.

    One statement (one round trip to the server), so in autocommit mode it is also one
    transaction: the messages, their recipients and the ``NOTIFY`` (which PostgreSQL delivers
    when, and only if, the transaction commits) all or nothing.
    """
    cur.execute(_INSERT, (
        now, now + expiry, owner, now + lease if lease > 0 else 0.0,
        [i[0] for i in items], [i[2][0].decode("utf-8") for i in items], [i[1] for i in items],
        [bytes(i[2][1]) for i in items],
        [msg_id for msg_id, _d, _f, names in items for _ in names],
        [n for _m, _d, _f, names in items for n in range(len(names))],
        [who for _m, _d, _f, names in items for who in names]))


_INSERT = (
    f"WITH m AS (INSERT INTO {_M} (msg_id, topic, digest, frame, created, expires, lease_owner, "
    "lease_until) SELECT u.msg_id, u.topic, u.digest, u.frame, %s::float8, %s::float8, "
    "%s::text, %s::float8 FROM "
    "unnest(%s::text[], %s::text[], %s::text[], %s::bytea[]) AS u(msg_id, topic, digest, frame)"
    f"), r AS (INSERT INTO {_R} (msg_id, position, recipient) SELECT * FROM "
    f"unnest(%s::text[], %s::int[], %s::text[])) SELECT pg_notify('{CHANNEL}', '')")



def _received_only(require: str) -> None:
    if require != "received":
        raise OutboxError(f"the PostgreSQL outbox cannot keep require={require!r} yet (only "
                          "'received'): use an SQLite outbox for processed deliveries")

__all__ = ["PG_SCHEMES", "PgConsumed", "PgStore", "connect", "is_url", "migrate", "redact"]


class PgStore:
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
    def _cursor(self) -> Iterator[Any]:
        """A cursor in autocommit mode: each statement is its own transaction."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.cursor() as cur:
                    yield cur
            except self._psycopg.Error as exc:
                raise wrap(self._url, exc, "outbox") from None

    # -- storing -----------------------------------------------------------------------------

    def runner_seen(self, now: float) -> None:
        """Runner activity is not kept in PostgreSQL yet: nothing is recorded (so
        ``gilmsg-outbox stats`` shows no last runner and publishers do not warn)."""

    def put(self, items: Sequence[tuple[str, str, Sequence[bytes], Sequence[str]]], now: float,
            expiry: float, lease: float = 0.0, require: str = "received") -> None:
        """Store the items in one commit (see ``Store.put``); on OutboxError none is stored.

        Raises:
            OutboxError: ``require`` is not ``"received"``: this store does not keep a message's
                level yet (its runners would settle for less), so nothing is stored.
        """
        _received_only(require)
        with self._cursor() as cur:  # one statement: its own transaction
            insert(cur, items, now, expiry, self.owner if lease > 0 else None, lease)

    def put_in(self, conn: Any,
               items: Sequence[tuple[str, str, Sequence[bytes], Sequence[str]]],
               now: float, expiry: float) -> None:
        """Insert the items in the caller's open transaction on ``conn`` (not committed here).

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
                insert(cur, items, now, expiry, None, 0.0)
        except psycopg.Error as exc:
            raise wrap(self._url, exc, "outbox") from None

    # -- reading -----------------------------------------------------------------------------

    def entries(self, status: Status | None = None,
                msg_ids: Iterable[str] | None = None) -> list[Entry]:
        """Stored messages (every status unless told), oldest first."""
        query = f"SELECT {_COLUMNS} FROM {_M}"
        args: list[Any] = []
        where = []
        if status is not None:
            where.append("status = %s")
            args.append(status.value)
        if msg_ids is not None:
            where.append("msg_id = ANY(%s)")
            args.append(list(msg_ids))
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created, msg_id"
        with self._cursor() as cur:
            entries = [_entry(r) for r in cur.execute(query, args).fetchall()]
            self._fill_recipients(cur, entries)
        return entries

    @staticmethod
    def _fill_recipients(cur: Any, entries: list[Entry]) -> None:
        by_id = {e.msg_id: e for e in entries}
        if not by_id:
            return
        names: dict[str, list[str]] = {k: [] for k in by_id}
        rows = cur.execute(f"SELECT msg_id, recipient, acked FROM {_R} WHERE msg_id = ANY(%s) "
                           "ORDER BY msg_id, position", (list(by_id),)).fetchall()
        for msg_id, who, acked in rows:
            names[msg_id].append(who)
            if acked is not None:
                by_id[msg_id].acked[who] = acked
        for msg_id, entry in by_id.items():
            entry.recipients = tuple(names[msg_id])

    def get(self, msg_id: str) -> Entry | None:
        """The stored message ``msg_id``, if any."""
        found = self.entries(msg_ids=[msg_id])
        return found[0] if found else None

    def events(self, msg_id: str) -> list[tuple[float, str, str | None]]:
        """What happened to ``msg_id`` besides sends: ``(at, kind, detail)``, oldest first."""
        with self._cursor() as cur:
            return [tuple(r) for r in cur.execute(
                f"SELECT at, kind, detail FROM {_E} WHERE msg_id = %s ORDER BY at, id",
                (msg_id,)).fetchall()]

    def stats(self, now: float) -> policy.Stats:
        """Counts, oldest pending age and per-recipient backlog (see :func:`policy.stats`)."""
        return policy.stats(self.entries(), now)

    def next_due(self) -> float | None:
        """The earliest ``next_attempt`` or lease end among pending messages (None: none)."""
        with self._cursor() as cur:
            row = cur.execute(f"SELECT min(greatest(next_attempt, lease_until)), min(expires) "
                              f"FROM {_M} WHERE status = 'pending'").fetchone()
        if row[0] is None:
            return None
        return float(min(row[0], row[1]))

    # -- the runner's side -------------------------------------------------------------------

    def claim(self, now: float, lease: float, joined: bool = False,
              limit: int = 1000) -> list[Stored]:
        """Lease to this process the pending messages due at ``now`` (at most ``limit``).

        Rows another transaction is claiming are skipped (``FOR UPDATE SKIP LOCKED``); rows
        leased by another host until later are not even read (the policy would refuse them:
        its liveness check only knows this host's processes).
        """
        with self._write() as cur:
            rows = cur.execute(
                f"SELECT msg_id, topic, created, expires, status, attempts, next_attempt, "
                f"lease_owner, lease_until, digest, frame FROM {_M} WHERE status = 'pending' "
                "AND (next_attempt <= %s OR %s) AND expires > %s AND (lease_owner IS NULL OR "
                "lease_until <= %s OR lease_owner LIKE %s) "
                "ORDER BY next_attempt, created LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, joined, now, now, _like_prefix(self.host), limit)).fetchall()
            entries = [Entry(r[0], r[1], (), r[2], r[3], Status(r[4]), {}, r[5], r[6], r[7],
                             r[8]) for r in rows]
            self._fill_recipients(cur, entries)
            claimed = []
            for entry, row in zip(entries, rows, strict=True):
                if not policy.is_due(entry, now, joined, self._alive):
                    continue
                entry.lease_owner, entry.lease_until = self.owner, now + lease
                claimed.append(Stored(entry, [entry.topic.encode("utf-8"), bytes(row[10])],
                                      row[9]))
            if claimed:
                cur.execute(f"UPDATE {_M} SET lease_owner = %s, lease_until = %s "
                            "WHERE msg_id = ANY(%s)",
                            (self.owner, now + lease, [s.entry.msg_id for s in claimed]))
        return claimed

    def _alive(self, owner: str) -> bool:
        return owner == self.owner or policy.owner_alive(owner, self.host, _pid_exists)

    def delivered(self, msg_id: str, acks: Mapping[str, float]) -> Status | None:
        """Record the ACKs of a delivery that got every one of them (the fast path)."""
        return self.record_acks(msg_id, acks)

    def record_acks(self, msg_id: str, acks: Mapping[str, float],
                    rejected: Mapping[str, str] | None = None) -> Status | None:
        """Record valid ACKs; returns the status after (see ``Store.record_acks``). A
        ``rejected`` recipient stays owed here (no column for its reason yet): it is asked
        again until the message expires, a false negative, never a false positive."""
        with self._write(light=True) as cur:
            return self._record(cur, msg_id, acks, time.time())

    @staticmethod
    def _record(cur: Any, msg_id: str, acks: Mapping[str, float],
                now: float) -> Status | None:
        row = cur.execute(f"SELECT status FROM {_M} WHERE msg_id = %s FOR UPDATE",
                          (msg_id,)).fetchone()
        if row is None:
            return None
        if acks:
            cur.executemany(f"UPDATE {_R} SET acked = %s WHERE msg_id = %s AND recipient = %s "
                            "AND acked IS NULL", [(at, msg_id, who) for who, at in acks.items()])
        changed = cur.execute(
            f"UPDATE {_M} SET status = 'delivered', finished = %s, lease_owner = NULL, "
            "lease_until = 0, last_error = NULL WHERE msg_id = %s AND status = 'pending' AND "
            f"NOT EXISTS (SELECT 1 FROM {_R} WHERE msg_id = %s AND acked IS NULL)",
            (now, msg_id, msg_id)).rowcount
        if changed:
            return Status.DELIVERED
        return Status(row[0])

    def finish_attempt(self, msg_id: str, acks: Mapping[str, float], error: str | None,
                       now: float, rejected: Mapping[str, str] | None = None) -> Entry | None:
        """Record ``acks`` and close this process's attempt (see ``Store.finish_attempt``;
        ``rejected`` as for :meth:`record_acks`)."""
        with self._write(light=True) as cur:
            if self._record(cur, msg_id, acks, now) is None:
                return None
            found = cur.execute(f"SELECT {_COLUMNS} FROM {_M} WHERE msg_id = %s",
                                (msg_id,)).fetchone()
            entry = _entry(found)
            self._fill_recipients(cur, [entry])
            if entry.lease_owner != self.owner or entry.status is not Status.PENDING:
                return entry
            policy.after_attempt(entry, now, error)
            cur.execute(f"UPDATE {_M} SET status = %s, attempts = %s, next_attempt = %s, "
                        "lease_owner = NULL, lease_until = 0, last_error = %s, finished = %s "
                        "WHERE msg_id = %s",
                        (entry.status.value, entry.attempts, entry.next_attempt,
                         entry.last_error, entry.finished, msg_id))
            return entry

    def expire(self, now: float) -> list[Entry]:
        """Mark expired every pending message whose expiry passed; returns them."""
        with self._write() as cur:
            rows = cur.execute(f"SELECT {_COLUMNS} FROM {_M} WHERE status = 'pending' AND "
                               "expires <= %s FOR UPDATE SKIP LOCKED", (now,)).fetchall()
            entries = [e for e in map(_entry, rows) if policy.should_expire(e, now)]
            self._fill_recipients(cur, entries)
            for entry in entries:
                entry.status, entry.finished = Status.EXPIRED, now
                cur.execute(f"UPDATE {_M} SET status = 'expired', finished = %s "
                            "WHERE msg_id = %s", (now, entry.msg_id))
                cur.execute(f"INSERT INTO {_E} (at, msg_id, kind, detail) VALUES "
                            "(%s, %s, 'expired', %s)",
                            (now, entry.msg_id, "still owed to " + ", ".join(entry.owed)))
        return entries

    # -- the operator's side -----------------------------------------------------------------

    def retry(self, msg_id: str | None, now: float) -> int:
        """Make ``msg_id`` (None: every pending message) due now; returns how many."""
        with self._write() as cur:
            if msg_id is None:
                rows = cur.execute(f"UPDATE {_M} SET next_attempt = 0 WHERE status = 'pending' "
                                   "RETURNING msg_id").fetchall()
            else:
                rows = cur.execute(f"UPDATE {_M} SET next_attempt = 0 WHERE msg_id = %s AND "
                                   "status = 'pending' RETURNING msg_id", (msg_id,)).fetchall()
            ids = [r[0] for r in rows]
            if ids:
                cur.executemany(f"INSERT INTO {_E} (at, msg_id, kind) VALUES (%s, %s, 'retry')",
                                [(now, one) for one in ids])
            return len(ids)

    def drop(self, msg_id: str, reason: str, now: float) -> Entry | None:
        """Give up on pending ``msg_id`` (see ``Store.drop``)."""
        with self._write() as cur:
            before = cur.execute(f"SELECT status FROM {_M} WHERE msg_id = %s FOR UPDATE",
                                 (msg_id,)).fetchone()
            if before is None:
                return None
            if before[0] == "pending":
                cur.execute(f"UPDATE {_M} SET status = 'dropped', reason = %s, finished = %s, "
                            "lease_owner = NULL, lease_until = 0 WHERE msg_id = %s",
                            (reason, now, msg_id))
                cur.execute(f"INSERT INTO {_E} (at, msg_id, kind, detail) VALUES "
                            "(%s, %s, 'dropped', %s)", (now, msg_id, reason))
        entry = self.get(msg_id)
        if entry is not None and before[0] != "pending":
            entry.status = Status(before[0])
        return entry

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


def _like_prefix(host: str) -> str:
    escaped = host.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + ":%"


class PgConsumed:
    """A consumed-message record in a PostgreSQL database (see ``gilmsg.outbox.dedup``).

    Shared by every host of a recipient service: a message consumed on one is ``done`` on all.
    A record commits with ``synchronous_commit=on``: once :meth:`record` returns, it survives
    the recipient's host and the server crashing. Thread-safe.

    Raises:
        OutboxError: unreachable, not gilmsg's, read-only, newer schema (see :func:`connect`).
    """

    KIND = "consumed-message record"

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

    def record(self, key: str, msg_id: Any = None) -> None:
        """Commit that the message with ``key`` was consumed (idempotent). Raises OutboxError."""
        with self._cursor() as cur:
            cur.execute(f"INSERT INTO {NAMESPACE}.consumed VALUES (%s, %s, %s) "
                        "ON CONFLICT (key) DO NOTHING",
                        (key, str(msg_id) if msg_id is not None else None, time.time()))

    def __len__(self) -> int:
        with self._cursor() as cur:
            return int(cur.execute(f"SELECT count(*) FROM {NAMESPACE}.consumed").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

