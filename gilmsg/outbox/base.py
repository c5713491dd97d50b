"""The outbox store's reads and writes, once for both backends (SQLite and PostgreSQL).

:class:`SqlStore` holds every operation of :class:`~gilmsg.outbox.store.OutboxStore` but
``put``, written in the SQL both databases speak; every decision (due, expired, backoff,
delivered) comes from :mod:`gilmsg.outbox.policy`. A backend subclass supplies only what
differs: its connection and transactions (:meth:`SqlStore._write`, :meth:`SqlStore._read`),
its placeholder and table names, its row locks, and its spelling of "one of these ids".
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from gilmsg.outbox import policy
from gilmsg.outbox.policy import Entry, Status

#: The columns :func:`entry_of` reads, in its order.
COLUMNS = ("msg_id, topic, created, expires, status, attempts, next_attempt, lease_owner, "
           "lease_until, last_error, reason, finished, require")
_N = 13  # len(COLUMNS)


@dataclass(frozen=True)
class Stored:
    """A message as the runner needs it: its decisions' view and its exact bytes."""

    entry: Entry
    frames: list[bytes]
    digest: str


def entry_of(row: Sequence[Any]) -> Entry:
    """The :class:`Entry` of a row of :data:`COLUMNS` (its recipients not filled in)."""
    return Entry(row[0], row[1], (), row[2], row[3], Status(row[4]), {}, row[5], row[6],
                 row[7], row[8], row[9], row[10], row[11], {}, row[12])


def pid_exists(pid: int) -> bool:
    """Does a process ``pid`` exist on this host (whoever owns it)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    """``items`` in consecutive lists of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


class SqlStore:
    """The outbox operations over a backend's connection (see the module's docstring).

    SQL here is written with ``?`` placeholders and ``{M}``, ``{R}``, ``{E}`` for the messages,
    recipients and events tables; :meth:`_q` turns it into the backend's own. Every method
    that changes rows runs in one transaction of :meth:`_write`; rows read there and changed
    after are locked first (``LOCK_ROWS``) where the backend locks rows rather than the file.
    """

    #: The tables (the PostgreSQL store qualifies them with its schema).
    MESSAGES, RECIPIENTS, EVENTS = "messages", "recipients", "events"
    #: This backend's placeholder.
    PARAM = "?"
    #: Appended to a SELECT whose rows the transaction changes next (empty: the transaction
    #: already excludes every other writer); ``SKIP_LOCKED`` also passes over rows another
    #: transaction holds.
    LOCK_ROWS = ""
    SKIP_LOCKED = ""
    #: The two-argument maximum (``max`` in SQLite, ``greatest`` in PostgreSQL).
    GREATEST = "max"
    #: The events' insertion order.
    EVENT_ORDER = "rowid"
    #: How many ids one ``_any`` condition takes at most.
    BATCH = 500

    path: str
    owner: str
    host: str

    # -- what a backend supplies -------------------------------------------------------------

    def _write(self, light: bool = False) -> AbstractContextManager[Any]:
        """One write transaction yielding an object with ``execute`` and ``executemany``; any
        database failure rolls it back and becomes an OutboxError. ``light``: commit without
        waiting for the disk (recorded ACKs: losing one only costs a re-send)."""
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Any]:
        """An object to read with (``execute``); failures become an OutboxError."""
        raise NotImplementedError

    def _any(self, column: str, ids: list[str]) -> tuple[str, list[Any]]:
        """The condition "``column`` is one of ``ids``" (SQL of :meth:`_q`) and its arguments."""
        return f"{column} IN ({','.join('?' * len(ids))})", list(ids)

    def _q(self, sql: str) -> str:
        """``sql`` in this backend's placeholder and table names."""
        sql = sql.format(M=self.MESSAGES, R=self.RECIPIENTS, E=self.EVENTS)
        return sql if self.PARAM == "?" else sql.replace("?", self.PARAM)

    # -- reading -----------------------------------------------------------------------------

    def entries(self, status: Status | None = None,
                msg_ids: Iterable[str] | None = None) -> list[Entry]:
        """Stored messages (every status unless told), oldest first."""
        query = f"SELECT {COLUMNS} FROM {{M}}"
        args: list[Any] = []
        where = []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if msg_ids is not None:
            condition, ids = self._any("msg_id", list(msg_ids))
            where.append(condition)
            args.extend(ids)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created, msg_id"
        with self._read() as c:
            entries = [entry_of(r) for r in c.execute(self._q(query), args).fetchall()]
            self._fill_recipients(c, entries)
        return entries

    def _fill_recipients(self, c: Any, entries: list[Entry]) -> None:
        by_id = {e.msg_id: e for e in entries}
        if not by_id:
            return
        names: dict[str, list[str]] = {k: [] for k in by_id}
        for chunk in chunks(list(by_id), self.BATCH):
            condition, args = self._any("msg_id", chunk)
            rows = c.execute(self._q(f"SELECT msg_id, recipient, acked, rejected FROM {{R}} "
                                     f"WHERE {condition} ORDER BY msg_id, position"),
                             args).fetchall()
            for msg_id, who, acked, rejected in rows:
                names[msg_id].append(who)
                if acked is not None:
                    by_id[msg_id].acked[who] = acked
                if rejected is not None:
                    by_id[msg_id].rejected[who] = rejected
        for msg_id, entry in by_id.items():
            entry.recipients = tuple(names[msg_id])

    def get(self, msg_id: str) -> Entry | None:
        """The stored message ``msg_id``, if any."""
        found = self.entries(msg_ids=[msg_id])
        return found[0] if found else None

    def events(self, msg_id: str) -> list[tuple[float, str, str | None]]:
        """What happened to ``msg_id`` besides sends: ``(at, kind, detail)``, oldest first."""
        with self._read() as c:
            return [tuple(r) for r in c.execute(self._q(
                f"SELECT at, kind, detail FROM {{E}} WHERE msg_id = ? "
                f"ORDER BY at, {self.EVENT_ORDER}"), (msg_id,)).fetchall()]

    def stats(self, now: float) -> policy.Stats:
        """Counts, oldest pending age and per-recipient backlog (see :func:`policy.stats`)."""
        return policy.stats(self.entries(), now)

    def next_due(self) -> float | None:
        """The earliest ``next_attempt`` or lease end among pending messages (None: none)."""
        with self._read() as c:
            row = c.execute(self._q(f"SELECT min({self.GREATEST}(next_attempt, lease_until)), "
                                    "min(expires) FROM {M} WHERE status = 'pending'")
                            ).fetchone()
        if row[0] is None:
            return None
        return float(min(row[0], row[1]))

    # -- runner activity (a heartbeat row in the event log) -----------------------------------

    def runner_seen(self, now: float) -> None:
        """Record that this process's runner is active at ``now`` (only the latest is kept)."""
        with self._write(light=True) as c:
            c.execute(self._q("DELETE FROM {E} WHERE kind = 'runner' AND msg_id = ''"))
            c.execute(self._q("INSERT INTO {E} (at, msg_id, kind, detail) VALUES (?, '', "
                              "'runner', ?)"), (now, self.owner))

    def last_runner(self) -> tuple[float, str] | None:
        """``(when, owner)`` of the latest runner activity recorded, or None if never."""
        with self._read() as c:
            row = c.execute(self._q("SELECT at, detail FROM {E} WHERE kind = 'runner' AND "
                                    "msg_id = '' ORDER BY at DESC LIMIT 1")).fetchone()
        return None if row is None else (float(row[0]), row[1] or "")

    # -- the runner's side -------------------------------------------------------------------

    def claim(self, now: float, lease: float, joined: bool = False,
              limit: int = 1000) -> list[Stored]:
        """Lease to this process the pending messages due at ``now`` (at most ``limit``).

        ``joined``: a subscriber appeared; every pending message not leased elsewhere is due.
        Rows leased by another host until later are not even read (the policy would refuse
        them: its liveness check only knows this host's processes); rows another transaction
        is claiming are skipped where the backend locks rows (``FOR UPDATE SKIP LOCKED``).
        """
        prefix = self.host + ":"
        with self._write() as c:
            rows = c.execute(self._q(
                f"SELECT {COLUMNS}, digest, frame FROM {{M}} WHERE status = 'pending' "
                "AND (next_attempt <= ? OR ?) AND expires > ? AND (lease_owner IS NULL OR "
                "lease_until <= ? OR substr(lease_owner, 1, ?) = ?) "
                f"ORDER BY next_attempt, created LIMIT ?{self.SKIP_LOCKED}"),
                (now, bool(joined), now, now, len(prefix), prefix, limit)).fetchall()
            entries = [entry_of(r) for r in rows]
            self._fill_recipients(c, entries)
            claimed = []
            for entry, row in zip(entries, rows, strict=True):
                if not policy.is_due(entry, now, joined, self._alive):
                    continue
                entry.lease_owner, entry.lease_until = self.owner, now + lease
                claimed.append(Stored(entry, [entry.topic.encode("utf-8"), bytes(row[_N + 1])],
                                      row[_N]))
            if claimed:
                c.executemany(self._q("UPDATE {M} SET lease_owner = ?, lease_until = ? "
                                      "WHERE msg_id = ?"),
                              [(self.owner, now + lease, s.entry.msg_id) for s in claimed])
        return claimed

    def _alive(self, owner: str) -> bool:
        return owner == self.owner or policy.owner_alive(owner, self.host, pid_exists)

    def delivered(self, msg_id: str, acks: Mapping[str, float]) -> Status | None:
        """Record the ACKs of a delivery that got every one of them (the fast path)."""
        return self.record_acks(msg_id, acks)

    def record_acks(self, msg_id: str, acks: Mapping[str, float],
                    rejected: Mapping[str, str] | None = None) -> Status | None:
        """Record valid ACKs (recipient -> wall time) and rejections (recipient -> reason);
        returns the message's status after (None: no such message).

        Only recipients the message names are recorded, each once (the first answer wins). A
        message that then owes nobody is marked delivered (``rejected`` if a recipient
        rejected it, with every rejection's reason in its ``last_error``), whoever holds its
        lease.
        """
        with self._write(light=True) as c:
            return self._record(c, msg_id, acks, time.time(), rejected)

    def _record(self, c: Any, msg_id: str, acks: Mapping[str, float], now: float,
                rejected: Mapping[str, str] | None = None) -> Status | None:
        # The message's row lock orders two transactions recording answers for one message,
        # so that the last of them sees every answer and settles it.
        row = c.execute(self._q(f"SELECT status FROM {{M}} WHERE msg_id = ?{self.LOCK_ROWS}"),
                        (msg_id,)).fetchone()
        if row is None:
            return None
        unanswered = "AND acked IS NULL AND rejected IS NULL"
        if acks:
            c.executemany(self._q("UPDATE {R} SET acked = ? WHERE msg_id = ? AND recipient = ? "
                                  + unanswered), [(at, msg_id, who) for who, at in acks.items()])
        if rejected:
            c.executemany(self._q("UPDATE {R} SET rejected = ? WHERE msg_id = ? AND "
                                  "recipient = ? " + unanswered),
                          [(why, msg_id, who) for who, why in rejected.items()])
        changed = c.execute(self._q(
            "UPDATE {M} SET status = CASE WHEN EXISTS (SELECT 1 FROM {R} WHERE msg_id = ? AND "
            "rejected IS NOT NULL) THEN 'rejected' ELSE 'delivered' END, finished = ?, "
            "lease_owner = NULL, lease_until = 0, last_error = NULL WHERE msg_id = ? AND "
            "status = 'pending' AND NOT EXISTS (SELECT 1 FROM {R} WHERE msg_id = ? "
            + unanswered + ")"), (msg_id, now, msg_id, msg_id)).rowcount
        if not changed:
            return Status(row[0])
        reasons = c.execute(self._q("SELECT recipient, rejected FROM {R} WHERE msg_id = ? "
                                    "AND rejected IS NOT NULL ORDER BY position"),
                            (msg_id,)).fetchall()
        if not reasons:
            return Status.DELIVERED
        c.execute(self._q("UPDATE {M} SET last_error = ? WHERE msg_id = ?"),
                  ("; ".join(f"rejected by {who}: {why}" for who, why in reasons), msg_id))
        return Status.REJECTED

    def finish_attempt(self, msg_id: str, acks: Mapping[str, float], error: str | None,
                       now: float, rejected: Mapping[str, str] | None = None) -> Entry | None:
        """Record ``acks`` and ``rejected`` (as :meth:`record_acks`) and close this process's
        attempt (backoff if anyone is still owed).

        An attempt whose lease another process took over meanwhile only records the answers.
        """
        with self._write(light=True) as c:
            if self._record(c, msg_id, acks, now, rejected) is None:
                return None
            entry = entry_of(c.execute(self._q(f"SELECT {COLUMNS} FROM {{M}} WHERE msg_id = ?"),
                                       (msg_id,)).fetchone())
            self._fill_recipients(c, [entry])
            if entry.lease_owner != self.owner or entry.status is not Status.PENDING:
                return entry
            policy.after_attempt(entry, now, error)
            c.execute(self._q("UPDATE {M} SET status = ?, attempts = ?, next_attempt = ?, "
                              "lease_owner = NULL, lease_until = 0, last_error = ?, "
                              "finished = ? WHERE msg_id = ?"),
                      (entry.status.value, entry.attempts, entry.next_attempt,
                       entry.last_error, entry.finished, msg_id))
            return entry

    def expire(self, now: float) -> list[Entry]:
        """Mark expired every pending message whose expiry passed; returns them."""
        with self._write() as c:
            rows = c.execute(self._q(f"SELECT {COLUMNS} FROM {{M}} WHERE status = 'pending' "
                                     f"AND expires <= ?{self.SKIP_LOCKED}"), (now,)).fetchall()
            entries = [e for e in map(entry_of, rows) if policy.should_expire(e, now)]
            self._fill_recipients(c, entries)
            for entry in entries:
                entry.status, entry.finished = Status.EXPIRED, now
                c.execute(self._q("UPDATE {M} SET status = 'expired', finished = ? "
                                  "WHERE msg_id = ?"), (now, entry.msg_id))
                self._event(c, now, entry.msg_id, "expired",
                            "still owed to " + ", ".join(entry.owed))
        return entries

    def _event(self, c: Any, at: float, msg_id: str, kind: str, detail: str | None) -> None:
        c.execute(self._q("INSERT INTO {E} (at, msg_id, kind, detail) VALUES (?, ?, ?, ?)"),
                  (at, msg_id, kind, detail))

    # -- the operator's side -----------------------------------------------------------------

    def retry(self, msg_id: str | None, now: float) -> int:
        """Make ``msg_id`` (None: every pending message) due now; returns how many."""
        with self._write() as c:
            if msg_id is None:
                ids = [r[0] for r in c.execute(self._q(
                    f"SELECT msg_id FROM {{M}} WHERE status = 'pending'{self.LOCK_ROWS}"))
                    .fetchall()]
            else:
                row = c.execute(self._q(f"SELECT status FROM {{M}} WHERE msg_id = ?"
                                        f"{self.LOCK_ROWS}"), (msg_id,)).fetchone()
                ids = [msg_id] if row is not None and row[0] == "pending" else []
            for one in ids:
                c.execute(self._q("UPDATE {M} SET next_attempt = 0 WHERE msg_id = ?"), (one,))
                self._event(c, now, one, "retry", None)
            return len(ids)

    def drop(self, msg_id: str, reason: str, now: float) -> Entry | None:
        """Give up on pending ``msg_id``: marked dropped with ``reason`` (kept, never deleted).

        Returns the entry as it was before, or None if there is no such message. A message
        that is not pending keeps its status (the returned entry says which).
        """
        with self._write() as c:
            before = c.execute(self._q(f"SELECT status FROM {{M}} WHERE msg_id = ?"
                                       f"{self.LOCK_ROWS}"), (msg_id,)).fetchone()
            if before is None:
                return None
            if before[0] == "pending":
                c.execute(self._q("UPDATE {M} SET status = 'dropped', reason = ?, finished = ?, "
                                  "lease_owner = NULL, lease_until = 0 WHERE msg_id = ?"),
                          (reason, now, msg_id))
                self._event(c, now, msg_id, "dropped", reason)
        entry = self.get(msg_id)
        if entry is not None and before[0] != "pending":
            entry.status = Status(before[0])
        return entry
