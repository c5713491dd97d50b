"""Opening gilmsg's SQLite files (outbox, consumed-message records): WAL, schema, clear errors.

Every failure of SQLite becomes one :class:`~gilmsg.errors.OutboxError` whose text names the
file and says what is wrong in words an operator can act on.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from gilmsg.errors import OutboxError

#: How long a writer waits for another process's write lock before giving up (seconds).
BUSY_TIMEOUT = 10.0

#: ``synchronous`` values gilmsg accepts: FULL survives power loss, NORMAL a process crash.
DURABILITY = ("full", "normal")


def describe(exc: BaseException) -> str:
    """What an SQLite (or OS) error means for the file, in a few words."""
    text = str(exc)
    low = text.lower()
    if "not a database" in low or "malformed" in low:
        return (f"not a usable SQLite file, corrupt? ({text}; move it aside, it is never "
                "overwritten)")
    if "readonly" in low or "read-only" in low:
        return f"read-only ({text}; check the file's and its directory's permissions)"
    if "disk is full" in low or "disk i/o" in low or "too large" in low:
        return f"cannot write: disk full or file size limit ({text})"
    if "unable to open" in low:
        return f"cannot open ({text}; does the directory exist and is it writable?)"
    if "locked" in low or "busy" in low:
        return f"locked by another process for longer than {BUSY_TIMEOUT:g}s ({text})"
    return text


def wrap(path: str | os.PathLike, exc: BaseException, what: str = "gilmsg store") -> OutboxError:
    """The :class:`OutboxError` for ``exc`` raised while using ``path``."""
    return OutboxError(f"{what} {os.fspath(path)}: {describe(exc)}")


#: ``PRAGMA application_id`` of each kind of gilmsg file, so one is never taken for another.
APPLICATION_IDS = {"outbox": 0x67696C6F, "consumed-message record": 0x67696C64}


def connect(path: str | os.PathLike, *, schema: list[str], version: int, kind: str,
            create: bool = True, readonly: bool = False, durability: str = "full",
            migrate: Callable[[sqlite3.Connection, int], None] | None = None
            ) -> sqlite3.Connection:
    """Open (and with ``create``, create) an SQLite file of ``kind`` at schema ``version``.

    The connection is in autocommit mode (callers open transactions explicitly), may be used
    from any thread (callers serialise), uses WAL and waits :data:`BUSY_TIMEOUT` for locks.

    Raises:
        OutboxError: the file is missing (without ``create``), corrupt, read-only (unless
            ``readonly``), unwritable, or of a newer schema version than ``version``.
    """
    if durability not in DURABILITY:
        raise OutboxError(f"{kind} {os.fspath(path)}: durability must be one of "
                          f"{', '.join(DURABILITY)}, not {durability!r}")
    p = Path(path)
    if not create and not p.exists():
        raise OutboxError(f"{kind} {os.fspath(path)}: no such file")
    if p.exists() and p.is_dir():
        raise OutboxError(f"{kind} {os.fspath(path)}: is a directory")
    try:
        if readonly:
            conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True,
                                   timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(os.fspath(p), timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
    except sqlite3.Error as exc:
        raise wrap(path, exc, kind) from None
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if found and app_id != APPLICATION_IDS[kind]:
            raise OutboxError(f"{kind} {os.fspath(path)}: an SQLite file, but not a gilmsg "
                              f"{kind}")
        if found == 0 and not readonly:  # before anything is written (WAL changes the header)
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables or app_id not in (0, APPLICATION_IDS[kind]):
                raise OutboxError(f"{kind} {os.fspath(path)}: an SQLite file, but not a gilmsg "
                                  f"{kind} (it has other tables); it was left untouched")
        if found > version:
            raise OutboxError(
                f"{kind} {os.fspath(path)}: written by a newer gilmsg (schema version {found}, "
                f"this gilmsg reads up to {version}); upgrade gilmsg to use it")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"{kind} {os.fspath(path)}: cannot switch to WAL mode "
                                  f"(journal mode stays {mode!r})")
            conn.execute(f"PRAGMA synchronous={durability.upper()}")
            if found < version:
                _upgrade(conn, path, kind, schema, version, migrate)
        elif found == 0:
            raise OutboxError(f"{kind} {os.fspath(path)}: not a gilmsg {kind} (empty or foreign)")
        conn.execute("PRAGMA foreign_keys=ON")
    except OutboxError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise wrap(path, exc, kind) from None
    return conn


def _upgrade(conn: sqlite3.Connection, path: str | os.PathLike, kind: str, schema: list[str],
             version: int, migrate: Callable[[sqlite3.Connection, int], None] | None) -> None:
    """In one transaction: create the schema in an empty file, or migrate an older one, and
    set ``user_version``; a concurrent opener that did it first leaves nothing to do.

    Raises:
        OutboxError: the file has other tables (not a gilmsg file).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        again = conn.execute("PRAGMA user_version").fetchone()[0]  # a racing opener
        if again == 0:
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables:
                raise OutboxError(f"{kind} {os.fspath(path)}: an SQLite file, but "
                                  f"not a gilmsg {kind} (it has other tables)")
            for statement in schema:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_IDS[kind]}")
        elif again < version and migrate is not None:
            migrate(conn, again)
        conn.execute(f"PRAGMA user_version={version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
