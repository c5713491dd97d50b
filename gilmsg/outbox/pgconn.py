"""Opening gilmsg's tables in a PostgreSQL database: connections, clear errors, schema
versions and their migrations (psycopg 3). The stores are in :mod:`gilmsg.outbox.postgres`.

* the tables live in the schema ``gilmsg`` of the database, next to a ``gilmsg.meta`` table
  that names what they are (``outbox``, ``consumed-message record``) and their schema version;
* a database is **gilmsg's** when it has that meta table. An empty database is made gilmsg's
  on first use; a database with tables of its own is refused before anything is written to it
  (``gilmsg-outbox --outbox URL init`` adopts it, for the transactional outbox);
* a newer schema is refused; an older one is refused with the command that migrates it
  (``gilmsg-outbox --outbox URL migrate``): runners on several hosts share the database, and
  one upgraded host must not change the tables under the others without an operator saying so;
* a server that is unreachable, refuses the credentials or is a read-only replica gives one
  :class:`~gilmsg.errors.OutboxError` (exit 6 in the commands) whose text never holds the
  URL's password.
"""

from __future__ import annotations

import time
import zlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gilmsg.errors import OutboxError

#: The PostgreSQL schema (namespace) gilmsg's tables live in.
NAMESPACE = "gilmsg"
#: Seconds a connection attempt may take before the server counts as unreachable.
CONNECT_TIMEOUT = 10
#: Channel notified (on commit only) when messages are stored; runners LISTEN to it.
CHANNEL = "gilmsg_outbox"
#: Schema version of each kind this gilmsg writes. Outbox 2: what each message requires,
#: and each recipient's rejection reason. Consumed-message record 2: the settlement (status,
#: and a rejection's reason) of each consumed message.
VERSIONS = {"outbox": 2, "consumed-message record": 2}

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

#: The tables of each kind at schema version 1; a new database gets them, then every step of
#: :data:`MIGRATIONS` up to :data:`VERSIONS` (so a new table and a migrated one are the same).
SCHEMAS = {"outbox": OUTBOX_SCHEMA, "consumed-message record": CONSUMED_SCHEMA}

#: ``{kind: {from_version: [statements to reach from_version + 1]}}``.
MIGRATIONS: dict[str, dict[int, list[str]]] = {
    "outbox": {1: [
        f"ALTER TABLE {NAMESPACE}.messages ADD COLUMN IF NOT EXISTS require TEXT NOT NULL "
        "DEFAULT 'received'",
        f"ALTER TABLE {NAMESPACE}.recipients ADD COLUMN IF NOT EXISTS rejected TEXT",
    ]},
    "consumed-message record": {1: [
        f"ALTER TABLE {NAMESPACE}.consumed ADD COLUMN IF NOT EXISTS status TEXT",
        f"ALTER TABLE {NAMESPACE}.consumed ADD COLUMN IF NOT EXISTS reason TEXT",
    ]},
}


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
        _steps(conn, kind, 1, where)
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
            _steps(conn, kind, found, redact(url))
            conn.execute(f"UPDATE {NAMESPACE}.meta SET version = %s WHERE kind = %s",
                         (target, kind))
        return found, target
    except psycopg.Error as exc:
        raise wrap(url, exc, kind) from None
    finally:
        conn.close()


def _steps(conn: Any, kind: str, found: int, where: str) -> None:
    """Run the migrations of ``kind`` from version ``found`` to :data:`VERSIONS` (in the
    caller's transaction). Raises OutboxError if a step is missing."""
    for at in range(found, VERSIONS[kind]):
        steps = MIGRATIONS[kind].get(at)
        if steps is None:
            raise OutboxError(f"{kind} {where}: no migration from schema version {at}")
        for statement in steps:
            conn.execute(statement)
